"""The worker's garbage collector settings, set once when it starts consuming.

Measured in the worker benchmark (docs/benchmarks.md): full collections scanning the start-up
heap were most of the p99 latency, and young collections every 700 allocations cost a fifth
of the worker's throughput. The in-memory ceiling of ``benchmarks.worker`` applies the same
settings, so that it bounds the worker as it runs.
"""

from __future__ import annotations

import gc

GC_YOUNG_THRESHOLD = 50_000
"""Container allocations (net) between two collections of the cyclic garbage collector's
youngest generation, once the worker runs (Python's default: 700). A step allocates tens of
thousands of short-lived containers (decoded events, feature dicts, histories), nearly all
freed by reference counting; collecting every 700 scanned them again and again: worker
9,895-10,494 -> 11,629-13,342 events/s, 19-20 -> 15-16 CPU s per 200,000 events
(docs/benchmarks.md)."""


_heap_settled = False


def settle_heap() -> None:
    """Once, when the worker starts consuming: collect, then freeze what exists into the
    collector's permanent generation.

    Everything allocated by then (modules, Faust, River, aiokafka, the app) lives as long as
    the process, yet each full collection of the cyclic garbage collector scanned all of it:
    about 100 ms every few seconds, which was most of the p99 event-to-scored latency
    (docs/benchmarks.md). What the worker allocates afterwards is collected as usual, but
    the youngest generation is collected every :data:`GC_YOUNG_THRESHOLD` allocations rather
    than every 700.
    """
    global _heap_settled
    if not _heap_settled:
        _heap_settled = True
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
