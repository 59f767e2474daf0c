"""The compliance console: one static page (HTML and a script, no build step, nothing from the
internet) served at ``/console``. It signs in with a pasted bearer token, reads alerts and
cases over GraphQL, hears new alerts through the ``alertRaised`` subscription
(graphql-transport-ws) and acts through the command API, whose address ``/console/config.json``
gives. The page itself is the same for everyone; every request it makes is checked like any other.
"""

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from common.settings import Settings

FILES = Path(__file__).with_name("console")
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: http:; "
                                       "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"}


def routes(settings: Settings) -> list[BaseRoute]:
    command_url = f"http://{settings.command_host}:{settings.command_port}"

    async def page(_request: Request) -> Response:
        return FileResponse(FILES / "index.html", media_type="text/html", headers=_HEADERS)

    async def script(_request: Request) -> Response:
        return FileResponse(FILES / "console.js", media_type="text/javascript", headers=_HEADERS)

    async def config(_request: Request) -> Response:
        return JSONResponse({"commandUrl": command_url, "graphqlPath": "/graphql"})

    return [Route("/console", page), Route("/console/console.js", script),
            Route("/console/config.json", config)]
