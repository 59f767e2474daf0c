"""Process-wide settings of a long-running server's Python runtime."""

import gc

#: Allocations between two young-generation collections (Python's default is 700). A request
#: allocates a few hundred objects that die with it; at the default, a busy API spends a tenth
#: of its time in collections that find nothing to free.
YOUNG_GENERATION = 50_000


def settle_heap() -> None:
    """Call once start-up is done: what exists now (modules, pools, clients) lives as long as
    the process, so it is set aside from every later collection, and collections come less
    often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION, 20, 100)
