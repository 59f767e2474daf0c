"""Pure parts of the query side: cursors and the cost, depth and alias measures."""

import gc
import time
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import graphql.validation.rules.overlapping_fields_can_be_merged as overlapping
import pytest
from graphql import GraphQLError, get_introspection_query, parse
from hypothesis import given
from hypothesis import strategies as st
from strawberry.types.graphql import OperationType

from query import limits, pages
from query.cache import MISSING, ByteLRU
from query.limits import MAX_COST, check, measure
from query.schema import schema


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


def fanned_out(levels: int) -> str:
    """Fragments that each spread the one below twice: 2**levels fields once expanded, in a
    document of a few hundred bytes."""
    fragments = ["fragment F0 on Query { freshness { recordsBehind } }"]
    fragments += [f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)]
    return f"query {{ ...F{levels} }} " + " ".join(fragments)


def test_measuring_fanned_out_fragments_takes_work_linear_in_the_document() -> None:
    small, large = parse(fanned_out(19)), parse(fanned_out(38))
    for doc, levels in ((small, 19), (large, 38)):
        started = time.perf_counter()
        m = measure(doc, None, None)
        assert m.visited <= 2 * levels + 4, m  # each fragment measured once, not 2**levels times
        assert m.cost == 2 * 2**levels  # the whole expansion is costed all the same
        assert time.perf_counter() - started < 0.5  # secondary: it took 2.4 s at 19 levels
        with pytest.raises(GraphQLError) as refused:
            check(m)
        assert refused.value.extensions["code"] == "query_too_costly"


def test_fragments_keep_their_depth_wherever_they_are_spread() -> None:
    doc = parse("""query { transfers { nodes { ...T } } wallet(id: "a") { ...W } }
        fragment T on Transfer { fromWallet { ...W } }
        fragment W on Wallet { balances { asset { symbol } } }""")
    m = measure(doc, None, None)
    assert m.depth == 6  # transfers > nodes > fromWallet > balances > asset > symbol
    assert m.visited <= 10


def test_a_document_with_too_many_fields_is_refused_before_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_args: object) -> None:
        raise AssertionError("validated")

    monkeypatch.setattr(limits, "validate_document", never)
    doc = parse("{ " + "freshness { recordsBehind } " * 495 + "}")
    refused = limits.refusal(doc, None, None, None, OperationType.QUERY, True, schema._schema)
    assert [e.extensions["code"] for e in refused] == ["too_many_fields"]


def test_graphiqls_introspection_query_is_within_the_field_limit() -> None:
    doc = parse(get_introspection_query(descriptions=True, input_value_deprecation=True))
    m = measure(doc, None, None)
    assert m.fields <= limits.MAX_FIELDS
    check(m)


def test_byte_lru_keeps_to_its_budget() -> None:
    cache: ByteLRU[str] = ByteLRU(100)
    for i in range(10):
        cache.put(i, str(i), 30)
    assert cache.size <= 100 and len(cache) == 3
    assert cache.get(0) is MISSING and cache.get(9) == "9"
    cache.put("huge", "x", 101)
    assert cache.get("huge") is MISSING and cache.size <= 100
    cache.put(9, "nine", 10)
    assert cache.get(9) == "nine" and cache.size == 70


def test_parsed_queries_are_remembered_within_a_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large distinct queries (as a client may send) keep the memory of the cache bounded."""
    budget = 2**20
    monkeypatch.setattr(limits, "_documents", ByteLRU(budget))
    queries = ["{ freshness { " + f"f{n} " * 400 + "} }" for n in range(12)]  # ~0.22 MB each, parsed
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for q in queries:
            limits.parse_cached(q, limits.MAX_TOKENS)
        gc.collect()  # a document is a cycle (its tokens link both ways): the collector frees it
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert limits._documents.size <= budget
    assert 0 < len(limits._documents) < len(queries)
    assert kept < budget * 1.25, kept  # all twelve would be ~2.6 MB


@pytest.mark.parametrize("query, refused", [
    ("{ " + "freshness { recordsBehind } " * 11 + "}", True),
    ("{ " + "freshness { recordsBehind } " * 10 + "}", False),
    ("{ ...A ...B } fragment A on Query { " + "freshness { recordsBehind } " * 6 + "} "
     "fragment B on Query { " + "freshness { recordsBehind } " * 6 + "}", True),
    ("{ freshness { " + "recordsBehind " * 11 + "} }", True),
    ("{ " + " ".join(f"a{i}: freshness {{ recordsBehind }}" for i in range(15)) + " }", False),
])
def test_a_response_key_repeated_in_one_selection_set_is_bounded(query: str, refused: bool) -> None:
    """Validation compares every two fields of one response key: repeats are refused first."""
    m = measure(parse(query), None, None)
    assert m.fields <= limits.MAX_FIELDS
    if refused:
        with pytest.raises(GraphQLError) as error:
            check(m)
        assert error.value.extensions["code"] == "too_many_fields"
        assert "freshness" in error.value.message or "recordsBehind" in error.value.message
    else:
        check(m)


def test_the_worst_document_within_the_limits_validates_with_little_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted in the comparisons validation makes (495 repeated fields made 200,001 and took
    1.4 s): the limits leave a few hundred."""
    compared = 0
    find_conflict = overlapping.find_conflict

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal compared
        compared += 1
        return find_conflict(*args, **kwargs)

    monkeypatch.setattr(overlapping, "find_conflict", counted)
    fields = ["transfers { nodes { id } }", "trades { nodes { id } }", "events { nodes { id } }",
              "assets { nodes { symbol } }", "freshness { recordsBehind }"]
    doc = parse("{ " + " ".join(f * limits.MAX_REPEATS for f in fields) + " }")
    check(measure(doc, None, None))
    assert limits.validate_document(schema._schema, doc, tuple(limits.specified_rules)) == []
    assert 0 < compared < 1_000
