"""Personal data is sealed per wallet and erasable: a memo travels the log sealed with its wallet's
data key, the views show it in clear; erasing the wallet destroys the key, and GraphQL, SQL and a
rebuild show the memo as erased, while the log, the balances and the audit trail stay as they
were."""

import asyncpg
import httpx
import pytest

from common.settings import asyncpg_dsn
from events.readmodel import MEMO_ERASED
from projector import rebuild
from tests.conftest import Running, token
from tests.e2e.helpers import balances, funded_alice, graphql, post

pytestmark = pytest.mark.e2e

MEMO = """query($id: ID!) { transfer(id: $id) { memo status } }"""


async def test_a_memo_is_sealed_readable_then_erased_for_good(
        http: httpx.AsyncClient, running: Running) -> None:
    f = await funded_alice(http, running, "100.00")
    bob_token = token(f.bob, wallets=[f.bob])
    auditor, compliance = token("auditor", roles=["auditor"]), token("compliance", roles=["compliance"])
    sent = await post(http, running, "/v1/transfers", f.alice_token,
                      {"from": f.alice, "to": f.bob, "asset": f.symbol, "amount": "30.00",
                       "memo": "rent for März"})
    assert sent.json()["status"] == "completed", sent.text
    mine = sent.json()["transfer_id"]
    back = await post(http, running, "/v1/transfers", bob_token,
                      {"from": f.bob, "to": f.alice, "asset": f.symbol, "amount": "5.00", "memo": "thanks"})
    assert back.json()["status"] == "completed", back.text
    theirs = back.json()["transfer_id"]

    conn = await asyncpg.connect(asyncpg_dsn(running.stack.settings.database_url))
    try:
        # The views show it in clear; the log (and its copy, the audit trail) holds only ciphertext.
        assert (await graphql(http, running, auditor, MEMO, id=mine))["transfer"]["memo"] == "rent for März"
        assert await conn.fetchval("SELECT memo FROM transfers WHERE transfer_id = $1", mine) == "rent for März"
        logged = await conn.fetchval("SELECT payload FROM events WHERE type = 'TransferInitiated' "
                                     "AND correlation_id = $1", mine)
        assert "sealed:v1:" in str(logged) and "rent" not in str(logged)
        before = {w: await balances(http, running, auditor, w) for w in (f.alice, f.bob)}
        events_before = await conn.fetchval("SELECT count(*) FROM events WHERE key = $1 OR correlation_id = $2",
                                            f"wallet:{f.alice}", mine)

        # Only the compliance role may erase.
        refused = await post(http, running, f"/v1/wallets/{f.alice}/erase", f.alice_token, {"reason": "GDPR"})
        assert refused.status_code == 403, refused.text
        erased = await post(http, running, f"/v1/wallets/{f.alice}/erase", compliance,
                            {"reason": "GDPR art. 17 request"})
        assert erased.status_code == 200 and erased.json()["status"] == "completed", erased.text

        assert (await graphql(http, running, auditor, MEMO, id=mine))["transfer"]["memo"] == MEMO_ERASED
        assert await conn.fetchval("SELECT memo FROM transfers WHERE transfer_id = $1", mine) == MEMO_ERASED
        # Bob's memo was sealed with bob's key: untouched.
        assert (await graphql(http, running, auditor, MEMO, id=theirs))["transfer"]["memo"] == "thanks"
        # Nothing else changed: balances, and the log and audit trail (one event more: the erasure).
        assert {w: await balances(http, running, auditor, w) for w in (f.alice, f.bob)} == before
        assert await conn.fetchval("SELECT payload FROM events WHERE type = 'TransferInitiated' "
                                   "AND correlation_id = $1", mine) == logged
        assert await conn.fetchval("SELECT count(*) FROM events WHERE key = $1 OR correlation_id = $2",
                                   f"wallet:{f.alice}", mine) == events_before + 1
        # Nothing new is stored for an erased wallet.
        again = await post(http, running, "/v1/transfers", f.alice_token,
                           {"from": f.alice, "to": f.bob, "asset": f.symbol, "amount": "1.00", "memo": "hi"})
        assert again.status_code == 422 and again.json()["error"]["field"] == "memo", again.text

        # A rebuild from offset 0 cannot bring it back: the key is gone.
        s = running.stack.settings
        swapped = await rebuild.rebuild(s.kafka_bootstrap, asyncpg_dsn(s.database_url), ["transfers"],
                                        progress=rebuild.Progress(out=None), keys=running.stack.keys)
        assert swapped == ["transfers"]
        assert await conn.fetchval("SELECT memo FROM transfers WHERE transfer_id = $1", mine) == MEMO_ERASED
        assert await conn.fetchval("SELECT memo FROM transfers WHERE transfer_id = $1", theirs) == "thanks"
        assert (await graphql(http, running, auditor, MEMO, id=mine))["transfer"]["memo"] == MEMO_ERASED
    finally:
        await conn.close()
