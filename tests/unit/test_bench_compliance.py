"""The compliance benchmark's live workload trips the large-movement rule on exactly the events
it times, and on nothing else it counts as tripping."""

import itertools

from bench.compliance import Live
from bench.projector import SYMBOL, Ledger
from compliance import rules as rules_file
from compliance.evaluate import State, evaluate
from events import codec


def test_the_live_workload_raises_a_large_movement_alert_for_each_tripping_event() -> None:
    rules = rules_file.load(None)
    ledger, state = Ledger(50, 4), State()
    for _, _, value in ledger.start():  # funded wallets, as after the catch-up
        evaluate(rules, state, codec.decode(value))
    live = Live(ledger, rules.large_movement.threshold(SYMBOL), trip_every=10)
    tripping, alerted, events = set(), set(), 0
    for _, _, value, event in itertools.islice(live.events(), 3_000):
        events += 1
        if event is not None:
            tripping.add(event)
        for alert in evaluate(rules, state, codec.decode(value)):
            if alert.rule == "large_movement":
                alerted.update(alert.evidence)
    assert tripping  # one transfer in ten: about one event in thirty
    assert 0.025 < len(tripping) / events < 0.04
    assert tripping <= alerted
