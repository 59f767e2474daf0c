"""The baseline server for ``bench.query``: the wallet balance lookup straight from asyncpg.

The same work a client cannot skip (the bearer token check, one SQL statement, the amount as a
decimal string) without GraphQL around it. ``python -m bench.query_raw PORT``.
"""

import contextlib
import sys
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common.auth import AuthError
from common.runtime import settle_heap
from common.settings import Settings, asyncpg_dsn, load
from common.tokens import Verified
from events.amounts import format_amount
from query.pool import Pool

_BALANCE = """SELECT b.available, a.decimals FROM wallet_balances b JOIN assets a ON a.symbol = b.asset
              WHERE b.wallet = $1 AND b.asset = $2"""


def create_app(settings: Settings) -> Starlette:
    tokens = Verified(settings.token_keys())  # as the query API does

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dsn = asyncpg_dsn(settings.database_url)
        app.state.pool = await Pool(dsn, min_size=2, max_size=10).start()  # as the query API's
        settle_heap()  # as the query API does after start-up
        yield
        await app.state.pool.close()

    async def balance(request: Request) -> Response:
        try:
            principal = tokens.authenticate(request.headers.get("authorization"))
        except AuthError as exc:
            return JSONResponse({"error": exc.code}, exc.status)
        wallet, asset = request.query_params.get("wallet", ""), request.query_params.get("asset", "")
        if not principal.may_see_wallet(wallet):
            return JSONResponse({"error": "forbidden"}, 403)
        row = await request.app.state.pool.fetchrow(_BALANCE, wallet, asset)
        if row is None:
            return JSONResponse({"available": None, "available_units": None})
        units = int(row["available"])
        return JSONResponse({"available": format_amount(units, row["decimals"]),
                             "available_units": str(units)})

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/balance", balance), Route("/healthz", healthz)], lifespan=lifespan)


if __name__ == "__main__":
    uvicorn.run(create_app(load()), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False, lifespan="on")
