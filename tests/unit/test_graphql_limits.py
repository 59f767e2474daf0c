"""Pure parts of the query side: cursors and the cost, depth and alias measures."""

from datetime import UTC, datetime

import pytest
from graphql import GraphQLError, parse
from hypothesis import given
from hypothesis import strategies as st

from query import pages
from query.limits import MAX_COST, check, measure


@given(st.datetimes(timezones=st.just(UTC)),
       st.text(st.characters(exclude_categories=("Cc", "Cs", "Cn")), min_size=1, max_size=40))
def test_cursor_round_trips(at: datetime, key: str) -> None:
    assert pages.decode("transfers", pages.encode("transfers", at, key), datetime, str) == (at, key)


@pytest.mark.parametrize("cursor", [
    "", "%%%", "bm90IGpzb24=", pages.encode("events", datetime(2026, 1, 1, tzinfo=UTC), "x"),
    pages.encode("transfers", "2026-01-01T00:00:00", "x"), pages.encode("transfers", 5, "x"),
    pages.encode("transfers", datetime(2026, 1, 1, tzinfo=UTC)), "A" * 2000,
])
def test_a_cursor_of_another_list_or_shape_is_refused(cursor: str) -> None:
    with pytest.raises(GraphQLError) as refused:
        pages.decode("transfers", cursor, datetime, str)
    assert refused.value.extensions["code"] == "invalid_cursor"


def test_page_size_bounds() -> None:
    assert pages.page_size(None) == pages.DEFAULT_PAGE
    assert pages.page_size(pages.MAX_PAGE) == pages.MAX_PAGE
    for bad, code in ((pages.MAX_PAGE + 1, "page_too_large"), (-1, "invalid_argument")):
        with pytest.raises(GraphQLError) as refused:
            pages.page_size(bad)
        assert refused.value.extensions["code"] == code


def test_cost_multiplies_by_page_size_including_variables() -> None:
    doc = parse("query($n: Int) { transfers(first: $n) { nodes { id asset { symbol } } } }")
    small, large = measure(doc, None, {"n": 1}), measure(doc, None, {"n": 100})
    assert large.cost > 50 * small.cost
    # A `first` above the page limit is costed at the limit: the page error is the clearer one.
    assert measure(doc, None, {"n": 10**9}).cost == large.cost


def test_fragments_count_for_depth_aliases_and_cost() -> None:
    doc = parse("""query { ...F ...F }
        fragment F on Query { a: transfers(first: 100) { nodes { fromWallet { statement(asset: "X", first: 100) {
            nodes { kind } } } } } }""")
    m = measure(doc, None, None)
    assert m.aliases == 2 and m.depth == 6 and m.cost > MAX_COST
    with pytest.raises(GraphQLError) as refused:
        check(m)
    assert refused.value.extensions["code"] == "query_too_costly"


def test_fragment_cycles_terminate() -> None:
    doc = parse("query { ...A } fragment A on Query { ...B } fragment B on Query { ...A freshness { recordsBehind } }")
    assert measure(doc, None, None).depth == 2
