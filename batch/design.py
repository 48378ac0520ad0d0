"""From lake rows to model inputs: the feature names a model expects, and its matrix.

``batch.dataset.History`` holds each event's served features as columns (decoded from the
lake's JSON). A transaction model takes a dense matrix: the served dense features, any
``extra_*`` columns of a replayed dataset, and the batch-only profile columns; a missing
value is NaN, which gradient-boosted trees route on their own. An email model takes a sparse
matrix: the dense features plus every hashed ``tok_*`` text feature (from the JSON).

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
from models.names import EventKind
from models.text import TEXT_FEATURE_PREFIX, TOKEN_BUCKETS

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

    def __init__(self, kind: EventKind, served: list[str], profiles: list[str]) -> None:
        self.kind = kind
        self.served = list(served)
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
        return sp.hstack(
            [sp.csr_matrix(np.nan_to_num(numeric.astype(np.float64))), tokens], format="csr"
        )

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


def dense_matrix(frame: pl.DataFrame, served: list[str], columns: list[str]) -> Any:
    """Rows x (``served`` + ``columns``) as float32 (the columns' type, half the memory of
    float64), NaN where a value is absent or not finite."""
    matrix = frame.select(served + columns).to_numpy()  # a null becomes NaN
    if matrix.dtype != np.float32:
        matrix = matrix.astype(np.float32)
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix


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


SCORE_BLOCK_ROWS = 100_000
"""Events scored together by :func:`score_with`: a block's matrix and keys take tens of MB,
where two million events at once would take a gigabyte."""


def score_with(model: weights.BatchModel, frame: pl.DataFrame) -> FloatArray:
    """Calibrated scores of ``model`` on ``frame``'s events as a worker would serve them: the
    served features, and the model's own lookup tables (not the frame's profile columns)
    by each event's ``entity_id`` and ``scope_id``; :data:`SCORE_BLOCK_ROWS` at a time."""
    if frame.height > SCORE_BLOCK_ROWS:
        blocks = range(0, frame.height, SCORE_BLOCK_ROWS)
        return np.concatenate([score_with(model, frame.slice(i, SCORE_BLOCK_ROWS)) for i in blocks])
    entities, scopes = frame["entity_id"].to_list(), frame["scope_id"].fill_null("").to_list()
    if "features" in frame.columns:  # emails: the token features are only in the JSON
        rows = [orjson.loads(raw) for raw in frame["features"]]
        keys = [{"entity_id": e, "scope_id": s} for e, s in zip(entities, scopes, strict=True)]
        return model.score_rows(rows, keys)
    columns = {
        name: frame[name].to_numpy() for name in model.feature_names if name in frame.columns
    }
    raw = model.raw_columns(columns, {"entity_id": entities, "scope_id": scopes}, n=frame.height)
    return model.calibrate(raw)
