"""Batch-model weights as signed data: how a trained model travels from the nightly job to the
workers.

A trained scikit-learn model is exported to plain numbers (:class:`Trees` for a
``HistGradientBoostingClassifier``, :class:`Linear` for a logistic regression), with a
:class:`ModelCard` naming the feature set and input columns it expects, a Platt
:class:`Calibration` and the batch-only feature tables (:class:`Lookup`) it was trained with.
Nothing is pickled: whoever can write to Redis must not be able to run code in a worker, and a
pickle (or a skops file with a long trusted-types list) is code. The numbers are evaluated
here with numpy, vectorised over a batch of events, which also keeps scikit-learn's OpenMP
thread pool off the hot path (a multi-threaded ``predict`` on one row can stall a worker).

:func:`sign` wraps the payload in a small JSON envelope with an HMAC-SHA256; :func:`verify`
checks the HMAC over the exact payload bytes *before* decoding them, then decodes strictly and
validates every number and index, so that even a payload signed with the right key cannot
crash or hang a worker. Every refusal is an :class:`InvalidWeights` whose ``reason`` says what
to do about it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from importlib import metadata
from itertools import chain, repeat
from typing import Annotated, Any, Final, Literal

import msgspec
import numpy as np
import scipy.sparse
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from models.features import FEATURE_SET_VERSIONS
from models.names import EVENT_KINDS, EventKind
from models.text import TEXT_FEATURE_PREFIX

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "IDENTITY",
    "BatchModel",
    "Blend",
    "Calibration",
    "Envelope",
    "InvalidWeights",
    "Linear",
    "Lookup",
    "ModelCard",
    "Payload",
    "Scale",
    "Tree",
    "Trees",
    "blend",
    "blend_array",
    "calibration_from_sklearn",
    "check_version",
    "library_versions",
    "linear_from_sklearn",
    "peek",
    "sign",
    "trees_from_sklearn",
    "verify",
]

FORMAT: Final = "fraudstream-weights"
FORMAT_VERSION: Final = 1
MAX_BLOB_BYTES = 64 * 1024 * 1024
"""Blobs larger than this are refused before any parsing (a text model is about 1 MB)."""

PROBABILITY_CLIP = 1e-6
"""Probabilities are clipped to ``[PROBABILITY_CLIP, 1 - PROBABILITY_CLIP]`` before a logit."""

RESERVED_VERSIONS = frozenset({"current", "history"})
"""Names that would collide with the registry's pointer keys (see ``RedisKeys``)."""

_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_FLOAT = float(np.finfo(np.float64).max)
_F64 = NDArray[np.float64]


class InvalidWeights(ValueError):
    """Weights that cannot be used; ``reason`` says why, in words a person can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_version(version: str) -> str:
    """``version`` if it can name a model (it becomes part of a Redis key), else ValueError."""
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise ValueError(
            f"model version {version!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if version in RESERVED_VERSIONS:
        raise ValueError(f"model version {version!r} is reserved by the registry")
    return version


def library_versions(*distributions: str) -> dict[str, str]:
    """Versions of Python and of the libraries a model was trained with, for its card."""
    names = distributions or ("numpy", "scikit-learn", "msgspec")
    versions = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# --- the payload schema -----------------------------------------------------------------

UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]


class Blend(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the online and batch probabilities combine into the final score:
    ``sigmoid(online_weight * logit(online) + batch_weight * logit(batch) + bias)``.

    A blend in logit space keeps either model's confident verdict confident, where an average
    of probabilities would halve it. The weights are fitted by the batch job on held-out
    events, so they travel with the batch model they were fitted for.
    """

    online_weight: float = 0.5
    batch_weight: float = 0.5
    bias: float = 0.0


class ModelCard(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What a batch model is, what it expects and how good it was when it was trained.

    ``feature_names`` are the model's input columns in order; ``trained_until`` is the
    training cut-off (no event or label after it was seen). The thresholds apply to the
    blended score: ``0 <= review_threshold <= block_threshold``; a threshold above 1 is
    never reached (the batch job's "never block").

    Only what could break scoring is enforced here; whether the fitted numbers are any good
    (a negative blend weight, a flat calibration) is for the batch job's promotion gate.
    """

    kind: EventKind
    version: str
    feature_set_version: str
    feature_names: list[str]
    created_at: UtcTime
    trained_until: UtcTime
    library_versions: dict[str, str]
    metrics: dict[str, float]
    review_threshold: float
    block_threshold: float
    hybrid: Blend


class Tree(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One regression tree as parallel per-node lists; node 0 is the root.

    At an internal node, a value ``x`` of column ``feature`` goes to ``left`` when
    ``x <= threshold`` and to ``right`` otherwise; a missing value (NaN) goes left when
    ``missing_left``. A ``threshold`` of ``None`` (JSON ``null``) means +infinity: every
    present value goes left, the split is on missing values only. A leaf has ``feature == -1``
    and ``left == right == 0``; its ``value`` is its contribution to the decision value.
    Children always have larger indices than their parent, so evaluation terminates.
    """

    feature: list[int]
    threshold: list[float | None]
    missing_left: list[bool]
    left: list[int]
    right: list[int]
    value: list[float]


class Trees(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="trees"):
    """Gradient-boosted trees: decision value = ``baseline`` + the sum of each tree's leaf
    value, added in tree order (scikit-learn's order, so the sum is bit-identical)."""

    n_features: int
    baseline: float
    trees: list[Tree]


class Scale(msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True):
    """Standardisation of one dense feature, ``(x - mean) / scale``; JSON ``[mean, scale]``."""

    mean: float
    scale: float


class Linear(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="linear"):
    """A linear model on named, sparse features: decision value = ``intercept`` + the sum of
    ``weights[name] * x'`` where ``x' = (x - mean) / scale`` for a feature in ``scaling``,
    ``x * idf[name]`` for a hashed text feature in ``idf`` and ``x`` otherwise. A feature an
    event lacks is 0 (before scaling); a feature without a weight has weight 0."""

    weights: dict[str, float]
    intercept: float
    scaling: dict[str, Scale] = {}
    idf: dict[str, float] = {}


class Calibration(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Platt scaling of the decision value: ``p = sigmoid(a * raw + b)``.

    ``a=1, b=0`` (:data:`IDENTITY`) gives the model's own probability. Note scikit-learn's
    ``_SigmoidCalibration`` writes ``1 / (1 + exp(a_ * raw + b_))``: its ``a_``, ``b_`` are
    the negatives of these (see :func:`calibration_from_sklearn`).
    """

    a: float = 1.0
    b: float = 0.0


IDENTITY = Calibration()


class Lookup(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A batch-only feature table: for an event whose attribute ``key`` (``entity_id`` or
    ``scope_id``) is a row key, ``rows[value]`` supplies ``features`` (in that order); for
    any other event ``default`` does. The table replaces whatever the event carries under
    those names: the model was trained on the table's values."""

    key: Literal["entity_id", "scope_id"]
    features: list[str]
    rows: dict[str, list[float]]
    default: list[float]


class Payload(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The signed document: everything a worker needs to score with a batch model."""

    card: ModelCard
    body: Trees | Linear
    calibration: Calibration
    lookups: list[Lookup]


class _Header(msgspec.Struct):
    """The part of an envelope read before anything else, leniently, so that a blob of a
    newer format version is refused as such rather than as malformed."""

    format: str
    format_version: int


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """The JSON around the signed payload; ``payload`` is base64 in JSON."""

    format: Literal["fraudstream-weights"]
    format_version: Literal[1]
    kind: EventKind
    version: str
    hmac_sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
    payload: bytes


# --- blending ---------------------------------------------------------------------------


def _blend_of(card_or_blend: ModelCard | Blend) -> Blend:
    return card_or_blend.hybrid if isinstance(card_or_blend, ModelCard) else card_or_blend


def _logit(p: float) -> float:
    p = min(max(p, PROBABILITY_CLIP), 1.0 - PROBABILITY_CLIP)
    return math.log(p / (1.0 - p))


def _sigmoid(z: float) -> float:
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def blend(card_or_blend: ModelCard | Blend, online: float, batch: float) -> float:
    """The final score of one event from its online and batch probabilities."""
    w = _blend_of(card_or_blend)
    return _sigmoid(w.online_weight * _logit(online) + w.batch_weight * _logit(batch) + w.bias)


def logit_array(p: ArrayLike) -> _F64:
    """Logits of probabilities clipped to [1e-6, 1 - 1e-6]: the inputs of the blend (the
    batch job fits the blend's weights on exactly these)."""
    q = np.clip(np.asarray(p, dtype=np.float64), PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
    result: _F64 = np.log(q / (1.0 - q))
    return result


def blend_array(card_or_blend: ModelCard | Blend, online: ArrayLike, batch: ArrayLike) -> _F64:
    """:func:`blend` over arrays of probabilities (broadcast like numpy)."""
    w = _blend_of(card_or_blend)
    z = w.online_weight * logit_array(online) + w.batch_weight * logit_array(batch) + w.bias
    result: _F64 = expit(z)
    return result


# --- validation -------------------------------------------------------------------------


def _finite(values: Iterable[float], where: str) -> None:
    if not all(map(math.isfinite, values)):
        raise InvalidWeights(f"non-finite number in {where}")


def _unique(names: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidWeights(f"{where} lists {name!r} twice")
        seen.add(name)


def _check_card(card: ModelCard) -> None:
    if card.kind not in EVENT_KINDS:
        raise InvalidWeights(f"card.kind {card.kind!r} is not one of {EVENT_KINDS}")
    try:
        check_version(card.version)
    except ValueError as exc:
        raise InvalidWeights(f"card.version: {exc}") from None
    if not card.feature_names:
        raise InvalidWeights("card.feature_names is empty")
    _unique(card.feature_names, "card.feature_names")
    for name, at in (("created_at", card.created_at), ("trained_until", card.trained_until)):
        if at.utcoffset() != timedelta(0):
            raise InvalidWeights(f"card.{name} must be in UTC, not {at.isoformat()}")
    _finite(card.metrics.values(), "card.metrics")
    r, b = card.review_threshold, card.block_threshold
    _finite((r, b), "card thresholds")
    if not 0.0 <= r <= b:
        raise InvalidWeights(f"card thresholds must satisfy 0 <= review ({r}) <= block ({b})")
    w = card.hybrid
    _finite((w.online_weight, w.batch_weight, w.bias), "card.hybrid")


def _check_calibration(c: Calibration) -> None:
    _finite((c.a, c.b), "calibration")


def _check_tree(tree: Tree, n_features: int, t: int) -> int:
    """Validate one tree; return its depth (the number of steps from root to deepest leaf)."""
    n = len(tree.feature)
    where = f"tree {t}"
    if n == 0:
        raise InvalidWeights(f"{where} has no nodes")
    lengths = {
        len(tree.threshold),
        len(tree.missing_left),
        len(tree.left),
        len(tree.right),
        len(tree.value),
    }
    if lengths != {n}:
        raise InvalidWeights(f"{where}: per-node lists differ in length")
    _finite(tree.value, f"{where} values")
    _finite((x for x in tree.threshold if x is not None), f"{where} thresholds")
    depth = [0] * n
    for i in range(n):
        feature, left, right = tree.feature[i], tree.left[i], tree.right[i]
        if feature == -1:
            if left != 0 or right != 0:
                raise InvalidWeights(f"{where} node {i}: a leaf must have left == right == 0")
            continue
        if not 0 <= feature < n_features:
            raise InvalidWeights(f"{where} node {i}: feature {feature} is out of range")
        for child in (left, right):
            if not i < child < n:
                raise InvalidWeights(
                    f"{where} node {i}: child {child} must be after the node and below {n}"
                )
            depth[child] = max(depth[child], depth[i] + 1)
    return max(depth)


def _check_body(body: Trees | Linear, names: Sequence[str]) -> None:
    if isinstance(body, Trees):
        if body.n_features != len(names):
            raise InvalidWeights(
                f"trees read {body.n_features} columns, card.feature_names has {len(names)}"
            )
        _finite((body.baseline,), "trees baseline")
        if not body.trees:
            raise InvalidWeights("trees: no trees")
        return
    known = set(names)
    _finite(body.weights.values(), "linear weights")
    _finite((body.intercept,), "linear intercept")
    _finite((x for s in body.scaling.values() for x in (s.mean, s.scale)), "linear scaling")
    _finite(body.idf.values(), "linear idf")
    for where, keys in (("weights", body.weights), ("scaling", body.scaling), ("idf", body.idf)):
        unknown = sorted(set(keys) - known)
        if unknown:
            raise InvalidWeights(f"linear {where} name features not in card: {unknown[:5]}")
    if any(s.scale <= 0.0 for s in body.scaling.values()):
        raise InvalidWeights("linear scaling: every scale must be > 0")
    not_text = sorted(k for k in body.idf if not k.startswith(TEXT_FEATURE_PREFIX))
    if not_text:
        raise InvalidWeights(f"linear idf applies to {TEXT_FEATURE_PREFIX}* only: {not_text[:5]}")
    both = sorted(set(body.idf) & set(body.scaling))
    if both:
        raise InvalidWeights(f"linear: features both scaled and idf-weighted: {both[:5]}")


def _check_lookups(lookups: Sequence[Lookup], names: Sequence[str]) -> None:
    known = set(names)
    supplied: set[str] = set()
    for i, lookup in enumerate(lookups):
        where = f"lookup {i} ({lookup.key})"
        if lookup.key not in ("entity_id", "scope_id"):
            raise InvalidWeights(f"{where}: key must be entity_id or scope_id")
        _unique(lookup.features, f"{where} features")
        if not lookup.features:
            raise InvalidWeights(f"{where} has no features")
        unknown = sorted(set(lookup.features) - known)
        if unknown:
            raise InvalidWeights(f"{where} supplies features not in card: {unknown[:5]}")
        twice = sorted(supplied & set(lookup.features))
        if twice:
            raise InvalidWeights(f"{where} supplies features another lookup supplies: {twice}")
        supplied.update(lookup.features)
        width = len(lookup.features)
        for key, row in (*lookup.rows.items(), ("default", lookup.default)):
            if len(row) != width:
                raise InvalidWeights(f"{where} row {key!r} has {len(row)} values, not {width}")
            _finite(row, f"{where} row {key!r}")


# --- compiled evaluation ----------------------------------------------------------------


_WALK_CELLS = 1 << 22
"""(tree, row) pairs walked at once by :meth:`_CompiledTrees.decision`."""


class _CompiledTrees:
    """All trees in flat arrays, walked level by level for every (tree, row) pair at once.

    A comparison ``x <= t`` with "missing goes left/right" becomes one strict comparison that
    is False for NaN, so the missing direction needs no extra test:

    - missing goes right: ``x < nextafter(t, +inf)`` (True for ``x <= t``; False for NaN),
      true child = left, false child = right;
    - missing goes left: ``-x < -t`` (i.e. ``x > t``; False for NaN), true child = right,
      false child = left.

    ``x`` and ``-x`` sit side by side in one matrix of ``2 * n_features`` columns, so a node
    reads column ``feature`` or ``feature + n_features``. Leaves point at themselves. Trees
    are stored deepest first, so step ``s`` of the walk only touches the leading trees that
    are deeper than ``s`` (a contiguous block); the leaf values are then added in the
    original tree order. Inputs are clipped to the finite range (scikit-learn refuses
    infinities; a threshold is at most 1e300 or +inf), which gives an infinite value the
    direction of the largest finite one.
    """

    def __init__(self, body: Trees, depths: Sequence[int]) -> None:
        self.n_features = body.n_features
        order = sorted(range(len(body.trees)), key=lambda t: -depths[t])
        sorted_depths = [depths[t] for t in order]
        # active[s]: how many (leading, sorted) trees still move at step s
        self.active = [sum(1 for d in sorted_depths if d > s) for s in range(sorted_depths[0])]
        self.position = np.empty(len(order), dtype=np.intp)
        self.position[order] = np.arange(len(order), dtype=np.intp)
        sizes = [len(body.trees[t].feature) for t in order]
        offsets = np.cumsum([0, *sizes[:-1]], dtype=np.intp)
        total = int(sum(sizes))
        column = np.zeros(total, dtype=np.intp)
        bound = np.zeros(total, dtype=np.float64)
        children = np.zeros(2 * total, dtype=np.intp)
        values = np.zeros(total, dtype=np.float64)
        for t, offset in zip(order, offsets.tolist(), strict=True):
            tree = body.trees[t]
            nodes = np.arange(offset, offset + len(tree.feature), dtype=np.intp)
            feature = np.asarray(tree.feature, dtype=np.intp)
            leaf = feature < 0
            go_left = np.asarray(tree.missing_left, dtype=bool)
            thr = np.array([np.inf if x is None else x for x in tree.threshold], dtype=np.float64)
            left = np.asarray(tree.left, dtype=np.intp) + offset
            right = np.asarray(tree.right, dtype=np.intp) + offset
            column[nodes] = np.where(leaf, 0, feature + np.where(go_left, self.n_features, 0))
            bound[nodes] = np.where(go_left, -thr, np.nextafter(thr, np.inf))
            children[2 * nodes] = np.where(leaf, nodes, np.where(go_left, left, right))
            children[2 * nodes + 1] = np.where(leaf, nodes, np.where(go_left, right, left))
            values[nodes] = tree.value
        self.roots = offsets
        self.column = column
        self.bound = bound
        self.children = children
        self.values = values
        self.baseline = float(body.baseline)

    def decision(self, X: _F64) -> _F64:
        """Decision values of the rows of ``X``, in blocks of rows: the walk holds one node
        index per (tree, row), so a block of :data:`_WALK_CELLS` / trees rows keeps that
        and its temporaries at tens of megabytes however many rows are scored (2 million
        rows of 300 trees at once would take 4.8 GB per temporary)."""
        n = X.shape[0]
        block = max(1, _WALK_CELLS // max(1, len(self.roots)))
        if n <= block:
            return self._decision(X)
        return np.concatenate([self._decision(X[i : i + block]) for i in range(0, n, block)])

    def _decision(self, X: _F64) -> _F64:
        n = X.shape[0]
        out = np.full(n, self.baseline, dtype=np.float64)
        if n == 0:
            return out
        nf = self.n_features
        both = np.empty((n, 2 * nf), dtype=np.float64)
        np.clip(X, -_MAX_FLOAT, _MAX_FLOAT, out=both[:, :nf])
        np.negative(both[:, :nf], out=both[:, nf:])
        flat = both.ravel()
        # idx[t, r]: the node (global number) sorted tree t has reached for row r
        idx = np.repeat(self.roots[:, None], n, axis=1)
        row_start = (np.arange(n, dtype=np.intp) * (2 * nf))[None, :]
        for k in self.active:
            at = idx[:k]
            goes = flat[self.column[at] + row_start] < self.bound[at]
            idx[:k] = self.children[2 * at + goes]
        leaves = self.values[idx]
        for position in self.position.tolist():  # original tree order, as scikit-learn adds
            out += leaves[position]
        return out


class _CompiledLinear:
    """A linear model folded into one weight per column and an intercept: scaling becomes
    ``w / scale`` and ``intercept - w * mean / scale``, idf becomes ``w * idf``."""

    def __init__(self, body: Linear, names: Sequence[str]) -> None:
        index = {name: j for j, name in enumerate(names)}
        weights = np.zeros(len(names), dtype=np.float64)
        intercept = body.intercept
        for name, w in body.weights.items():
            scale = body.scaling.get(name)
            if scale is not None:
                weights[index[name]] = w / scale.scale
                intercept -= w * scale.mean / scale.scale
            else:
                weights[index[name]] = w * body.idf.get(name, 1.0)
        self.weights = weights
        self.padded = np.append(weights, 0.0)  # an extra column for names the model ignores
        self.intercept = intercept
        # Missing features are 0 before scaling, so the intercept already holds their effect.


class _CompiledLookup:
    def __init__(self, lookup: Lookup, names: Sequence[str]) -> None:
        index = {name: j for j, name in enumerate(names)}
        self.key = lookup.key
        self.columns = np.asarray([index[f] for f in lookup.features], dtype=np.intp)
        self.rows = {k: i for i, k in enumerate(lookup.rows)}
        table = [*lookup.rows.values(), lookup.default]
        self.table = np.asarray(table, dtype=np.float64).reshape(len(table), len(lookup.features))

    def values(self, keys: Iterable[str] | None, n: int) -> _F64:
        """``(n, len(features))`` values for the events with these keys (the default row
        for every event without keys)."""
        default = len(self.rows)
        if keys is None:
            picks = np.full(n, default, dtype=np.intp)
        else:
            get = self.rows.get
            picks = np.fromiter((get(k, default) for k in keys), np.intp, n)
        result: _F64 = self.table[picks]
        return result


# --- the model --------------------------------------------------------------------------


class BatchModel:
    """A validated batch model, ready to score batches of events.

    Constructing one validates everything (types, finite numbers, array lengths, child
    indices, names) and raises :class:`InvalidWeights` naming the problem: the batch job
    gets the same checks before it signs as a worker gets after it verifies.
    """

    def __init__(
        self,
        card: ModelCard,
        body: Trees | Linear,
        calibration: Calibration = IDENTITY,
        lookups: Sequence[Lookup] = (),
    ) -> None:
        payload = Payload(card=card, body=body, calibration=calibration, lookups=list(lookups))
        try:  # type-check a payload built in Python the way a decoded one is (and copy it)
            payload = msgspec.convert(msgspec.to_builtins(payload), Payload)
        except (msgspec.ValidationError, TypeError) as exc:
            raise InvalidWeights(f"malformed weights: {exc}") from None
        self._init(payload)

    @classmethod
    def _from_payload(cls, payload: Payload) -> BatchModel:
        """A model from a payload msgspec decoded already (types checked)."""
        model = cls.__new__(cls)
        model._init(payload)
        return model

    def _init(self, payload: Payload) -> None:
        card, body = payload.card, payload.body
        _check_card(card)
        _check_calibration(payload.calibration)
        _check_body(body, card.feature_names)
        _check_lookups(payload.lookups, card.feature_names)
        names = card.feature_names
        self._payload = payload
        self._lookups = [_CompiledLookup(lookup, names) for lookup in payload.lookups]
        supplied = {f for lookup in payload.lookups for f in lookup.features}
        self._row_names = [n for n in names if n not in supplied]
        self._row_columns = np.asarray(
            [j for j, n in enumerate(names) if n not in supplied], dtype=np.intp
        )
        self._trees: _CompiledTrees | None = None
        self._linear: _CompiledLinear | None = None
        if isinstance(body, Trees):
            depths = [_check_tree(tree, body.n_features, t) for t, tree in enumerate(body.trees)]
            self._trees = _CompiledTrees(body, depths)
        else:
            self._linear = _CompiledLinear(body, names)
            self._row_index = {n: j for j, n in enumerate(names) if n not in supplied}

    # --- what it is -----------------------------------------------------------------

    @property
    def card(self) -> ModelCard:
        return self._payload.card

    @property
    def body(self) -> Trees | Linear:
        return self._payload.body

    @property
    def calibration(self) -> Calibration:
        return self._payload.calibration

    @property
    def lookups(self) -> list[Lookup]:
        return list(self._payload.lookups)

    @property
    def kind(self) -> EventKind:
        return self._payload.card.kind

    @property
    def version(self) -> str:
        return self._payload.card.version

    @property
    def feature_names(self) -> list[str]:
        return list(self._payload.card.feature_names)

    @property
    def payload(self) -> Payload:
        """The document :func:`sign` signs."""
        return self._payload

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BatchModel) and self._payload == other._payload

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        body = "Trees" if self._trees is not None else "Linear"
        return f"BatchModel({self.kind!r}, version={self.version!r}, body={body})"

    def replace(
        self,
        *,
        card: ModelCard | None = None,
        calibration: Calibration | None = None,
        lookups: Sequence[Lookup] | None = None,
    ) -> BatchModel:
        """A copy with some parts replaced (validated again)."""
        p = self._payload
        return BatchModel(
            card if card is not None else p.card,
            p.body,
            calibration if calibration is not None else p.calibration,
            lookups if lookups is not None else p.lookups,
        )

    def with_card(self, **changes: Any) -> BatchModel:
        """A copy whose card has ``changes`` (e.g. ``version=``, ``metrics=``, ``hybrid=``)."""
        return self.replace(card=msgspec.structs.replace(self._payload.card, **changes))

    # --- scoring --------------------------------------------------------------------

    def score_rows(
        self,
        rows: Sequence[Mapping[str, float]],
        keys: Sequence[Mapping[str, str]] | None = None,
    ) -> _F64:
        """Calibrated probabilities, one per feature dict in ``rows``.

        ``keys[i]`` holds the ``entity_id`` / ``scope_id`` of event ``i`` for the lookups
        (without ``keys`` every lookup gives its default row). A feature a row lacks is
        missing: NaN for trees (they route it as trained), 0 for a linear model.
        """
        return self.calibrate(self.raw_rows(rows, keys))

    def raw_rows(
        self,
        rows: Sequence[Mapping[str, float]],
        keys: Sequence[Mapping[str, str]] | None = None,
    ) -> _F64:
        """Decision values (before calibration) of ``rows``; see :meth:`score_rows`."""
        n = len(rows)
        if keys is not None and len(keys) != n:
            raise ValueError(f"{len(keys)} keys for {n} rows")
        if self._trees is not None:
            X = np.empty((n, self._trees.n_features), dtype=np.float64)
            if self._row_names:
                nan, names = math.nan, self._row_names
                data = [row.get(name, nan) for row in rows for name in names]
                columns = np.asarray(data, dtype=np.float64).reshape(n, len(names))
                X[:, self._row_columns] = columns
            for lookup in self._lookups:
                X[:, lookup.columns] = lookup.values(_keys_of(keys, lookup.key), n)
            return self._trees.decision(X)
        assert self._linear is not None
        return self._linear_rows(self._linear, rows, keys)

    def _linear_rows(
        self,
        linear: _CompiledLinear,
        rows: Sequence[Mapping[str, float]],
        keys: Sequence[Mapping[str, str]] | None,
    ) -> _F64:
        n = len(rows)
        # Flatten every row's names and values in C loops; a name the model does not read
        # maps to the extra last column, whose weight is 0.
        ignored = len(linear.weights)
        names = chain.from_iterable(rows)
        count = sum(map(len, rows))
        columns = np.fromiter(map(self._row_index.get, names, repeat(ignored)), np.intp, count)
        values = np.fromiter(chain.from_iterable(r.values() for r in rows), np.float64, count)
        terms = linear.padded[columns] * _finite_or_zero(values)
        owner = np.repeat(np.arange(n, dtype=np.intp), [len(r) for r in rows])
        out = np.bincount(owner, weights=terms, minlength=n).astype(np.float64, copy=False)
        out += linear.intercept
        for lookup in self._lookups:
            out += lookup.values(_keys_of(keys, lookup.key), n) @ linear.weights[lookup.columns]
        return out

    def raw_columns(
        self,
        columns: Mapping[str, ArrayLike],
        keys: Mapping[str, Sequence[str]] | None = None,
        *,
        n: int,
    ) -> _F64:
        """Decision values of ``n`` events given column-wise, as a frame holds them:
        ``columns[name]`` for each served feature (a name not there is missing for every
        event), ``keys["entity_id"]`` / ``keys["scope_id"]`` for the lookups. The same
        numbers as :meth:`raw_rows` on the same events, without a dict per event."""
        X = np.full((n, len(self._payload.card.feature_names)), np.nan, dtype=np.float64)
        for j, name in zip(self._row_columns, self._row_names, strict=True):
            if name in columns:
                X[:, j] = np.asarray(columns[name], dtype=np.float64)
        for lookup in self._lookups:
            found = None if keys is None else keys.get(lookup.key)
            X[:, lookup.columns] = lookup.values(found, n)
        return self.raw_matrix(X)

    def score_matrix(self, X: ArrayLike | scipy.sparse.spmatrix | scipy.sparse.sparray) -> _F64:
        """Calibrated probabilities of the rows of ``X`` (columns in ``feature_names`` order;
        lookup features included as columns). Trees take a dense matrix with NaN for missing;
        a linear model also takes a scipy sparse matrix."""
        return self.calibrate(self.raw_matrix(X))

    def raw_matrix(self, X: ArrayLike | scipy.sparse.spmatrix | scipy.sparse.sparray) -> _F64:
        """Decision values of the rows of ``X`` (see :meth:`score_matrix`): what a Platt
        calibration is fitted on."""
        width = len(self._payload.card.feature_names)
        if scipy.sparse.issparse(X):
            if self._linear is None:
                raise ValueError("trees score dense matrices (NaN for missing), not sparse ones")
            csr = scipy.sparse.csr_array(X, dtype=np.float64)
            if csr.shape[1] != width:
                raise ValueError(f"X has {csr.shape[1]} columns, the model reads {width}")
            csr.data = _finite_or_zero(csr.data)
            sparse_z: _F64 = np.asarray(csr @ self._linear.weights, dtype=np.float64)
            return sparse_z + self._linear.intercept
        dense = np.asarray(X, dtype=np.float64)
        if dense.ndim != 2 or dense.shape[1] != width:
            raise ValueError(f"X must be (n_rows, {width}), not {dense.shape}")
        if self._trees is not None:
            return self._trees.decision(dense)
        assert self._linear is not None
        z: _F64 = np.asarray(_finite_or_zero(dense) @ self._linear.weights, dtype=np.float64)
        return z + self._linear.intercept

    def calibrate(self, raw: ArrayLike) -> _F64:
        """Probabilities from decision values: ``sigmoid(a * raw + b)``."""
        c = self._payload.calibration
        result: _F64 = expit(c.a * np.asarray(raw, dtype=np.float64) + c.b)
        return result


def _keys_of(keys: Sequence[Mapping[str, str]] | None, key: str) -> list[str] | None:
    """Each event's value of ``key`` ("" when it has none), or None without keys."""
    return None if keys is None else [k.get(key, "") for k in keys]


def _finite_or_zero(x: _F64) -> _F64:
    """A linear model's missing (NaN) is 0; infinities become the largest finite values."""
    result: _F64 = np.nan_to_num(x, nan=0.0, posinf=_MAX_FLOAT, neginf=-_MAX_FLOAT)
    return result


# --- signing ----------------------------------------------------------------------------


def _key_bytes(key: bytes | str) -> bytes:
    """The signing key as bytes (a str, as settings hold it, is UTF-8); refuses an empty one."""
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if not raw:
        raise InvalidWeights(
            "FRAUD_MODEL_SIGNING_KEY is empty; set the same secret for the batch job and the "
            "workers (e.g. `openssl rand -hex 32`)"
        )
    return raw


def _mac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def sign(model: BatchModel, key: bytes | str) -> bytes:
    """The signed blob of ``model``: a JSON envelope with the payload's HMAC-SHA256."""
    key = _key_bytes(key)
    payload = msgspec.json.encode(model.payload)
    envelope = Envelope(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        kind=model.kind,
        version=model.version,
        hmac_sha256=_mac(key, payload),
        payload=payload,
    )
    return msgspec.json.encode(envelope)


def _envelope(blob: bytes) -> Envelope:
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise InvalidWeights(f"weights blob must be bytes, not {type(blob).__name__}")
    if len(blob) > MAX_BLOB_BYTES:
        raise InvalidWeights(f"weights blob of {len(blob)} bytes exceeds {MAX_BLOB_BYTES}")
    try:
        header = msgspec.json.decode(blob, type=_Header)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidWeights(f"not a {FORMAT} blob (bad envelope): {exc}") from None
    if header.format != FORMAT:
        raise InvalidWeights(f"not a {FORMAT} blob (bad envelope): format is {header.format!r}")
    if header.format_version != FORMAT_VERSION:
        raise InvalidWeights(
            f"unknown weights format version {header.format_version}; this code reads version "
            f"{FORMAT_VERSION} (deploy workers that read it before publishing such a model)"
        )
    try:
        return msgspec.json.decode(blob, type=Envelope)
    except msgspec.DecodeError as exc:
        raise InvalidWeights(f"bad weights envelope: {exc}") from None


def peek(blob: bytes) -> tuple[EventKind, str]:
    """The kind and version an envelope *claims*, without checking the signature: for
    filing a blob (the registry), never for trusting it."""
    envelope = _envelope(blob)
    return envelope.kind, envelope.version


def verify(
    blob: bytes, key: bytes | str, *, kind: EventKind, feature_set_version: str | None = None
) -> BatchModel:
    """The model in ``blob``, once it is proved authentic and usable.

    Order matters: the HMAC is checked over the exact payload bytes before the payload is
    parsed at all; then the payload is decoded strictly (typed, no unknown fields) and every
    part validated. ``feature_set_version`` defaults to what this code computes for ``kind``.
    Raises :class:`InvalidWeights` with a reason for each failure.
    """
    key = _key_bytes(key)
    expected_features = (
        FEATURE_SET_VERSIONS[kind] if feature_set_version is None else feature_set_version
    )
    envelope = _envelope(blob)
    if not hmac.compare_digest(_mac(key, envelope.payload).encode(), envelope.hmac_sha256.encode()):
        raise InvalidWeights(
            "signature mismatch: the weights were altered or signed with another key (check "
            "that the batch job and the workers share FRAUD_MODEL_SIGNING_KEY)"
        )
    try:
        payload = msgspec.json.decode(envelope.payload, type=Payload)
    except msgspec.DecodeError as exc:
        raise InvalidWeights(f"malformed weights payload: {exc}") from None
    card = payload.card
    if (card.kind, card.version) != (envelope.kind, envelope.version):
        raise InvalidWeights(
            f"envelope says {envelope.kind}/{envelope.version} but the signed payload is "
            f"{card.kind}/{card.version}"
        )
    if card.kind != kind:
        raise InvalidWeights(
            f"wrong kind: the model scores {card.kind!r} events, this worker needs {kind!r} "
            "(was it published under the wrong kind?)"
        )
    if card.feature_set_version != expected_features:
        raise InvalidWeights(
            f"incompatible feature set: the model was trained on {card.feature_set_version!r}, "
            f"this code computes {expected_features!r}; retrain it on the current features"
        )
    try:
        return BatchModel._from_payload(payload)
    except InvalidWeights as exc:
        raise InvalidWeights(f"malformed weights payload: {exc.reason}") from None


# --- export from scikit-learn -----------------------------------------------------------


def _check_binary(estimator: Any) -> None:
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        raise ValueError(f"{type(estimator).__name__} is not fitted")
    labels = np.asarray(classes).tolist()
    if len(labels) != 2 or {int(c) for c in labels if isinstance(c, int | bool)} != {0, 1}:
        raise ValueError(
            f"only binary classifiers with classes [0, 1] (or [False, True]) can be exported; "
            f"this one has classes {labels}"
        )


def _names(feature_names: Sequence[str], estimator: Any) -> list[str]:
    names = [str(n) for n in feature_names]
    n_in = getattr(estimator, "n_features_in_", len(names))
    if len(names) != n_in:
        raise ValueError(f"{len(names)} feature names for an estimator of {n_in} features")
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is not None and list(fitted) != names:
        raise ValueError("feature_names differ from the names the estimator was fitted on")
    return names


def trees_from_sklearn(estimator: Any, feature_names: Sequence[str]) -> Trees:
    """Export a fitted binary ``HistGradientBoostingClassifier`` on numeric features.

    Refuses (ValueError) categorical features and multiclass models. ``feature_names`` are
    the estimator's input columns in order (they become the card's ``feature_names``).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    if not isinstance(estimator, HistGradientBoostingClassifier):
        raise ValueError(f"expected a HistGradientBoostingClassifier, not {type(estimator)}")
    if not hasattr(estimator, "_predictors"):
        raise ValueError("the HistGradientBoostingClassifier is not fitted")
    _check_binary(estimator)
    if estimator.n_trees_per_iteration_ != 1:
        raise ValueError("multiclass gradient boosting cannot be exported")
    categorical = getattr(estimator, "is_categorical_", None)
    if categorical is not None and np.any(categorical):
        raise ValueError("categorical features cannot be exported; encode them as numbers")
    names = _names(feature_names, estimator)
    trees = []
    for iteration in estimator._predictors:
        (predictor,) = iteration
        nodes = predictor.nodes
        if np.any(nodes["is_categorical"]):
            raise ValueError("a tree splits on a categorical feature; cannot export")
        leaf = nodes["is_leaf"].astype(bool)
        thresholds = nodes["num_threshold"].tolist()
        trees.append(
            Tree(
                feature=np.where(leaf, -1, nodes["feature_idx"]).tolist(),
                threshold=[
                    0.0 if is_leaf else (None if t == math.inf else t)
                    for is_leaf, t in zip(leaf.tolist(), thresholds, strict=True)
                ],
                missing_left=(nodes["missing_go_to_left"].astype(bool) & ~leaf).tolist(),
                left=np.where(leaf, 0, nodes["left"]).tolist(),
                right=np.where(leaf, 0, nodes["right"]).tolist(),
                value=nodes["value"].tolist(),
            )
        )
    baseline = float(np.asarray(estimator._baseline_prediction).ravel()[0])
    return Trees(n_features=len(names), baseline=baseline, trees=trees)


def linear_from_sklearn(
    estimator: Any,
    feature_names: Sequence[str],
    *,
    scaler: Any = None,
    scaled: Sequence[str] | None = None,
    idf: Mapping[str, float] | None = None,
) -> Linear:
    """Export a fitted binary ``LogisticRegression`` or ``SGDClassifier(loss="log_loss")``.

    ``feature_names`` name the estimator's input columns in order. When the estimator was
    trained on standardised dense features, pass the fitted ``StandardScaler`` and the names
    of the columns it was fitted on (``scaled``, in order; default: all of them); when hashed
    text features were multiplied by an idf, pass it as ``idf`` (name -> multiplier).
    """
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    if isinstance(estimator, SGDClassifier):
        if estimator.loss != "log_loss":
            raise ValueError(f"SGDClassifier(loss={estimator.loss!r}) has no probabilities")
    elif not isinstance(estimator, LogisticRegression):
        raise ValueError(f"expected LogisticRegression or SGDClassifier, not {type(estimator)}")
    _check_binary(estimator)
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    if coef.ndim != 2 or coef.shape[0] != 1:
        raise ValueError("multiclass linear models cannot be exported")
    names = _names(feature_names, estimator)
    weights = {n: float(w) for n, w in zip(names, coef[0].tolist(), strict=True) if w != 0.0}
    intercept = float(np.ravel(estimator.intercept_)[0]) if estimator.fit_intercept else 0.0
    scaling: dict[str, Scale] = {}
    if scaler is not None:
        columns = list(scaled) if scaled is not None else names
        if len(columns) != scaler.n_features_in_:
            raise ValueError(f"{len(columns)} scaled names for a scaler of {scaler.n_features_in_}")
        n = len(columns)
        means = scaler.mean_ if scaler.mean_ is not None else np.zeros(n)
        scales = scaler.scale_ if scaler.scale_ is not None else np.ones(n)
        scaling = {
            c: Scale(mean=float(m), scale=float(s))
            for c, m, s in zip(columns, means.tolist(), scales.tolist(), strict=True)
        }
    return Linear(
        weights=weights,
        intercept=intercept,
        scaling=scaling,
        idf={k: float(v) for k, v in (idf or {}).items()},
    )


def calibration_from_sklearn(calibrated: Any) -> Calibration:
    """The Platt calibration of a fitted ``CalibratedClassifierCV(method="sigmoid")`` with a
    single calibrator (a ``FrozenEstimator`` base, or ``ensemble=False``), on the base
    estimator's ``decision_function``."""
    fitted = getattr(calibrated, "calibrated_classifiers_", None)
    if fitted is None:
        raise ValueError("expected a fitted CalibratedClassifierCV")
    if calibrated.method != "sigmoid":
        raise ValueError(f"only sigmoid (Platt) calibration is supported, not {calibrated.method}")
    if len(fitted) != 1 or len(fitted[0].calibrators) != 1:
        raise ValueError("expected one binary calibrator (FrozenEstimator or ensemble=False)")
    sigmoid = fitted[0].calibrators[0]
    return Calibration(a=-float(sigmoid.a_), b=-float(sigmoid.b_))
