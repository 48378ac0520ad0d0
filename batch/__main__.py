"""``python -m batch``: see :mod:`batch.cli`.

Before Polars loads: its allocator (jemalloc) keeps freed pages for about ten seconds by
default, and a retrain frees and allocates gigabytes stage after stage, so the freed pages of
one stage would stack on the next one's peak (docs/benchmarks.md, *Nightly retrain*). An
operator's own ``_RJEM_MALLOC_CONF`` wins.
"""

import os

os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")

from batch.cli import run  # after the allocator setting, on purpose

run()
