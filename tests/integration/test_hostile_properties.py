"""Anything the processor accepts, the projector can apply: arbitrary text (NUL, surrogates,
emoji, right-to-left marks, very long) and numbers (0, negative, up to and beyond 10^78) go
through the codec, the envelope check and the deciders as a record produced straight to Kafka
would, and every event decided — a refusal too — is folded and written to the real PostgreSQL
with the projector's own store. Either the processor refuses the record (dead letter of an
undecodable record or a malformed follow-up), or the write succeeds."""

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.settings import asyncpg_dsn
from events import codec
from events.codec import DecodeError
from events.grammar import MAX_UNITS
from events.keys import asset_key, wallet_key
from events.messages import (
    ApplyBurn,
    ApplyCredit,
    ApplySettlement,
    AssetRegistered,
    BurnTokens,
    Command,
    Event,
    FreezeWallet,
    InitiateTrade,
    InitiateTransfer,
    IssueTokens,
    PayForTrade,
    ReduceSupply,
    RegisterAsset,
    TokensIssued,
    UnfreezeWallet,
    WalletCredited,
)
from processor.decide import AssetState, Balance, State, WalletState, consequences, decide, react
from processor.wellformed import aggregate_key, envelope_problem, refusal
from projector import store
from projector.fold import Position, RowChanges, apply
from tests.conftest import Stack

pytestmark = pytest.mark.integration

HOSTILE = ["alice", "USDX", "", " ", "a\x00b", "\x00", "bob\n", "\ud800", "x\udfffy", "🎉💸",
           "\u202eevil", "שלום", "\ufeff", "\ufdd0", "\\N", "tab\there", "'; DROP TABLE x; --",
           "e" * 10_000, "Z" * 281]
texts = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(st.characters(exclude_categories=()), max_size=300),  # surrogates included
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,10}", fullmatch=True),
    st.from_regex(r"[A-Z][A-Z0-9]{0,5}", fullmatch=True),
)
amounts = st.one_of(
    st.sampled_from([0, -1, 1, MAX_UNITS, MAX_UNITS + 1, -MAX_UNITS - 1, 10**100]),
    st.integers(min_value=-(10**80), max_value=10**80),
    st.integers(min_value=-3, max_value=1000),
)
commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(InitiateTransfer, transfer_id=texts, source=texts, target=texts, asset=texts,
              amount=amounts, memo=st.none() | texts),
    st.builds(RegisterAsset, symbol=texts, name=texts, decimals=st.integers(-2, 40), issuer=texts,
              max_supply=st.none() | amounts),
    st.builds(IssueTokens, symbol=texts, to=texts, amount=amounts),
    st.builds(InitiateTrade, trade_id=texts, seller=texts, buyer=texts, asset=texts,
              quantity=amounts, payment_asset=texts, price=amounts),
    st.builds(BurnTokens, wallet=texts, asset=texts, amount=amounts),
    st.builds(FreezeWallet, wallet=texts, reason=texts),
    st.builds(UnfreezeWallet, wallet=texts, reason=texts),
)


def _state(command: Command) -> State | None:
    """Rich enough that a well-formed command is accepted: assets registered, wallets funded."""
    match command:
        case RegisterAsset():
            return None
        case IssueTokens():
            return AssetState(symbol=command.symbol, name="x", decimals=2, issuer="t", max_supply=None)
        case InitiateTransfer() | BurnTokens():
            return WalletState(balances={command.asset: Balance(MAX_UNITS, 0)})
        case InitiateTrade():
            return WalletState(balances={command.asset: Balance(MAX_UNITS, 0)})
        case ApplyCredit() | ApplySettlement():  # follow-ups that decide nothing
            return WalletState(balances={})
        case ReduceSupply() | ApplyBurn():  # the follow-up of a burn
            return AssetState(symbol=command.symbol, name="x", decimals=2, issuer="t",
                              max_supply=None, supply=MAX_UNITS)
        case PayForTrade():  # the follow-up of a locked trade
            return WalletState(balances={command.payment_asset: Balance(MAX_UNITS, 0)})
    return None


class _RolledBack(Exception):
    pass


@pytest.fixture(scope="module")
def db(stack: Stack) -> Iterator[tuple[asyncio.AbstractEventLoop, asyncpg.Connection]]:
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(asyncpg_dsn(stack.settings.database_url)))
    try:
        yield loop, conn
    finally:
        loop.run_until_complete(conn.close())
        loop.close()


def _funded(wallet: str, asset: str) -> list[tuple[str, Event]]:
    """The views' side of what ``_state`` gives the processor: the asset registered and issued
    to the wallet (so the views never see a debit from an empty wallet)."""
    return [
        (asset_key(asset), AssetRegistered(symbol=asset, name="x", decimals=2, issuer="t")),
        (asset_key(asset), TokensIssued(symbol=asset, to=wallet, amount=MAX_UNITS, supply_after=MAX_UNITS)),
        (wallet_key(wallet), WalletCredited(wallet=wallet, asset=asset, amount=MAX_UNITS, kind="issue",
                                            reference=str(uuid.uuid4()))),
    ]


def _funding(command: Command) -> list[tuple[str, Event]]:
    match command:
        case IssueTokens():
            return [(asset_key(command.symbol), AssetRegistered(symbol=command.symbol, name="x",
                                                               decimals=2, issuer="t"))]
        case InitiateTransfer():
            return _funded(command.source, command.asset)
        case BurnTokens():
            return _funded(command.wallet, command.asset)
        case InitiateTrade():
            return _funded(command.seller, command.asset) + _funded(command.buyer, command.payment_asset)
    return []


def _through_kafka(env: codec.Envelope) -> codec.Envelope | None:
    """The record as a consumer decodes it; None when it cannot be encoded or decoded (the
    processor dead-letters what it cannot decode)."""
    try:
        return codec.decode(codec.encode(env))
    except (DecodeError, UnicodeEncodeError, ValueError):
        return None


def _decided(command: Command, principal: str) -> list[codec.Envelope] | None:
    """The events the processor would write for ``command``, follow-ups' included; None when it
    would dead-letter the record instead."""
    key = aggregate_key(command)
    sent = codec.envelope(command, key=key, command_id=str(uuid.uuid4()), principal=principal)
    received = _through_kafka(sent)
    if received is None or envelope_problem(key=received.key, principal=received.principal):
        return None
    decided = [(received.key, e) for e in decide(_state(command), received.payload, received.key)]
    for _, event in list(decided):
        for target, follow_up in react(event):
            # The target's events a follow-up stands for are written by this transaction.
            decided += [(target, e) for e in consequences(follow_up)]
            decided += [(target, e) for e in decide(_state(follow_up), follow_up, target)]
    if refusal(received.payload, received.key) is None:
        decided = _funding(received.payload) + decided
    now = datetime.now(UTC)
    out = []
    for key, event in decided:
        env = _through_kafka(codec.envelope(event, key=key, command_id=received.command_id,
                                            principal=received.principal, occurred_at=now))
        assert env is not None, f"the processor wrote an event it cannot read back: {event}"
        out.append(env)
    return out


async def _write(conn: asyncpg.Connection, events: list[codec.Envelope]) -> None:
    changes = RowChanges()
    for n, env in enumerate(events):
        apply(changes, env, Position("ledger.events", 0, n))
    with pytest.raises(_RolledBack):  # nothing of this test stays in the views
        async with conn.transaction():
            await store.write_batch(conn, changes, f"test-{uuid.uuid4()}", "ledger.events",
                                    {0: (None, len(events))}, swap_lock=False)
            raise _RolledBack


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=commands, principal=texts)
def test_whatever_the_processor_accepts_the_projector_can_write(
    db: tuple[asyncio.AbstractEventLoop, asyncpg.Connection], command: Command, principal: str
) -> None:
    events = _decided(command, principal)
    if events is None:
        return  # refused before deciding: a dead letter of the processor
    assert events, "a decision writes at least one event"
    loop, conn = db
    loop.run_until_complete(_write(conn, events))


def test_the_hostile_examples_are_stored_as_refusals(
    db: tuple[asyncio.AbstractEventLoop, asyncpg.Connection]
) -> None:
    loop, conn = db
    for command in (
        InitiateTransfer(transfer_id="x1", source="alice", target="bob", asset="USDX", amount=5,
                         memo="lunch\x00"),
        RegisterAsset(symbol="NUL", name="Nul\x00Coin", decimals=2, issuer="treasury"),
        IssueTokens(symbol="USDX", to="alice", amount=10**78),
    ):
        events = _decided(command, "ops")
        assert events is not None
        assert getattr(events[-1].payload, "reason", None) in (
            "invalid_text", "invalid_amount"), events
        loop.run_until_complete(_write(conn, events))
