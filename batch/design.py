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

from typing import Any

import numpy as np
import orjson
import polars as pl
import scipy.sparse as sp

from models import weights
from models.evaluation import FloatArray
from models.features import EXTRA_FEATURE_PREFIX, dense_feature_names
from models.names import EventKind
from models.text import TEXT_FEATURE_PREFIX, TOKEN_BUCKETS

SAMPLE_FOR_EXTRAS = 10_000
CONSTANT_STD = 1e-9
"""A column whose std is this small relative to its mean is constant (an empty profile all
through training can come out with a std of 1e-18 from rounding; dividing by it would blow
up any later value)."""


class Inputs:
    """The input of one kind's batch model: its column names, its matrix from lake rows, and
    (for the linear email model) the scaling fitted on the training rows.

    Columns: the numeric ones first (served dense features, ``extra_*`` of a replayed
    dataset, then the frame's profile columns), then for emails every possible hashed
    ``tok_*`` bucket, so a token first seen tomorrow still has its column.
    """

    def __init__(self, kind: EventKind, frame: pl.DataFrame, profiles: list[str]) -> None:
        self.kind = kind
        self.served = list(dense_feature_names(kind))
        if kind == "transaction":
            extras: set[str] = set()
            for raw in frame["features"].head(SAMPLE_FOR_EXTRAS):
                extras.update(k for k in orjson.loads(raw) if k.startswith(EXTRA_FEATURE_PREFIX))
            self.served += sorted(extras)
        self.profiles = profiles
        self.text = (
            [f"{TEXT_FEATURE_PREFIX}{b}" for b in range(TOKEN_BUCKETS)] if kind == "email" else []
        )
        self.names = self.served + profiles + self.text
        self._numeric = len(self.served) + len(profiles)
        self._mean: FloatArray | None = None
        self._scale: FloatArray | None = None
        self._idf: FloatArray | None = None

    def matrix(self, frame: pl.DataFrame) -> Any:
        """Rows x names: dense (NaN where absent) for trees, CSR (0 where absent) with text."""
        numeric = dense_matrix(frame, self.served, self.profiles)
        if not self.text:
            return numeric
        tokens = _token_matrix(frame, {name: i for i, name in enumerate(self.text)})
        return sp.hstack([sp.csr_matrix(np.nan_to_num(numeric)), tokens], format="csr")

    def fit_transform(self, X: Any) -> Any:
        """Fit the linear model's scaling on training rows (TF-IDF weights for the tokens,
        standardisation for the numeric columns) and apply it; trees take ``X`` as it is."""
        if not self.text:
            return X
        k = self._numeric
        numeric = X[:, :k].toarray()
        mean, std = numeric.mean(axis=0), numeric.std(axis=0)
        self._mean = mean
        self._scale = np.where(std <= CONSTANT_STD * np.maximum(1.0, np.abs(mean)), 1.0, std)
        df = np.asarray((X[:, k:] != 0).sum(axis=0)).ravel()
        self._idf = np.log((1 + X.shape[0]) / (1 + df)) + 1.0
        return self.transform(X)

    def transform(self, X: Any) -> Any:
        if not self.text:
            return X
        assert self._mean is not None and self._scale is not None and self._idf is not None
        k = self._numeric
        numeric = (X[:, :k].toarray() - self._mean) / self._scale
        return sp.hstack([sp.csr_matrix(numeric), X[:, k:] @ sp.diags(self._idf)], format="csr")

    def export(self, estimator: Any) -> weights.Trees | weights.Linear:
        """The fitted estimator as data that takes raw (untransformed) feature values."""
        if not self.text:
            return weights.trees_from_sklearn(estimator, self.names)
        assert self._mean is not None and self._scale is not None and self._idf is not None
        k = self._numeric
        coef = np.asarray(estimator.coef_, dtype=np.float64)[0]
        return weights.Linear(
            weights={n: float(w) for n, w in zip(self.names, coef, strict=True) if w != 0.0},
            intercept=float(estimator.intercept_[0]),
            scaling={
                n: weights.Scale(mean=float(m), scale=float(sc))
                for n, m, sc in zip(self.names[:k], self._mean, self._scale, strict=True)
            },
            idf={n: float(i) for n, i in zip(self.text, self._idf, strict=True)},
        )


def dense_matrix(frame: pl.DataFrame, served: list[str], columns: list[str]) -> FloatArray:
    """Rows x (``served`` + ``columns``): served features decoded from JSON (NaN when
    absent), then the frame's own columns (the profiles)."""
    dtype = pl.Struct({name: pl.Float64 for name in served})
    decoded = frame.select(pl.col("features").str.json_decode(dtype).struct.unnest())
    parts = [decoded.select(served).to_numpy().astype(np.float64, copy=False)]
    if columns:
        parts.append(frame.select(columns).to_numpy().astype(np.float64, copy=False))
    matrix = np.hstack(parts) if len(parts) > 1 else parts[0]
    return np.where(np.isfinite(matrix), matrix, np.nan)


def _token_matrix(frame: pl.DataFrame, index: dict[str, int]) -> sp.csr_matrix:
    """Rows x text buckets as CSR, from each row's served ``tok_*`` features."""
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
    return sp.csr_matrix(
        (np.asarray(data, dtype=np.float64), np.asarray(indices, dtype=np.int64), indptr),
        shape=(frame.height, len(index)),
    )


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
