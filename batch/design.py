"""From lake rows to model inputs: the feature names a model expects, and its matrix.

The lake stores each event's served features as one JSON object (see ``batch.lake``). A
transaction model takes a dense matrix: the served dense features, any ``extra_*`` columns
of a replayed dataset, and the batch-only profile columns; a missing value is NaN, which
gradient-boosted trees route on their own. An email model takes a sparse matrix: the dense
features plus every hashed ``tok_*`` text feature.

The live scorer builds the same inputs from the same names (``models.weights.BatchModel``
puts a feature dict into the order of ``feature_names``), so training and serving cannot
disagree on a column's position.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import orjson
import polars as pl
import scipy.sparse as sp

from models.features import EXTRA_FEATURE_PREFIX, dense_feature_names
from models.names import EventKind
from models.text import TEXT_FEATURE_PREFIX, TOKEN_BUCKETS

SAMPLE_FOR_EXTRAS = 10_000


def served_names(frame: pl.DataFrame, kind: EventKind) -> list[str]:
    """The served feature names a model of ``kind`` takes from ``frame``'s ``features``.

    Transactions: the fixed dense names plus the ``extra_*`` names found in (a sample of)
    the rows. Emails: the dense names plus every possible text bucket, so a token first seen
    tomorrow still has its column.
    """
    names = list(dense_feature_names(kind))
    if kind == "email":
        return names + [f"{TEXT_FEATURE_PREFIX}{b}" for b in range(TOKEN_BUCKETS)]
    extras: set[str] = set()
    for raw in frame["features"].head(SAMPLE_FOR_EXTRAS):
        extras.update(k for k in orjson.loads(raw) if k.startswith(EXTRA_FEATURE_PREFIX))
    return names + sorted(extras)


def dense_matrix(
    frame: pl.DataFrame, served: list[str], columns: list[str]
) -> npt.NDArray[np.float64]:
    """Rows x (``served`` + ``columns``): served features decoded from JSON (NaN when
    absent), then the frame's own columns (the profiles)."""
    dtype = pl.Struct({name: pl.Float64 for name in served})
    decoded = frame.select(pl.col("features").str.json_decode(dtype).struct.unnest())
    parts = [decoded.select(served).to_numpy().astype(np.float64, copy=False)]
    if columns:
        parts.append(frame.select(columns).to_numpy().astype(np.float64, copy=False))
    matrix = np.hstack(parts) if len(parts) > 1 else parts[0]
    return np.where(np.isfinite(matrix), matrix, np.nan)


def sparse_matrix(frame: pl.DataFrame, served: list[str], columns: list[str]) -> sp.csr_matrix:
    """Rows x (``served`` + ``columns``) as CSR: absent features are 0."""
    index = {name: i for i, name in enumerate(served)}
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for raw in frame["features"]:
        for name, value in orjson.loads(raw).items():
            i = index.get(name)
            if i is not None and value:
                indices.append(i)
                data.append(value)
        indptr.append(len(indices))
    served_part = sp.csr_matrix(
        (np.asarray(data, dtype=np.float64), np.asarray(indices, dtype=np.int64), indptr),
        shape=(frame.height, len(served)),
    )
    if not columns:
        return served_part
    extra = sp.csr_matrix(frame.select(columns).fill_null(0.0).to_numpy().astype(np.float64))
    return sp.hstack([served_part, extra], format="csr")


def feature_rows(frame: pl.DataFrame) -> list[dict[str, float]]:
    """Each row's served features as a dict, as the worker holds them (no profile columns:
    a model's lookup tables add those)."""
    return [orjson.loads(raw) for raw in frame["features"]]


def lookup_keys(frame: pl.DataFrame) -> list[dict[str, str]]:
    """Each row's ``entity_id`` and ``scope_id``, the keys of a model's lookup tables."""
    return [
        {"entity_id": e, "scope_id": s or ""}
        for e, s in frame.select("entity_id", "scope_id").iter_rows()
    ]
