"""Batch-model weights: exact parity with scikit-learn, lookups, signing and every refusal.

Parity is checked on the decision values, where any difference in routing a row (a threshold
compared the wrong way, a NaN sent the wrong side) shows up as a whole leaf value.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import numpy as np
import pytest
import scipy.sparse
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.preprocessing import StandardScaler

from models import weights as W
from models.features import EMAIL_FEATURE_SET_VERSION, TXN_FEATURE_SET_VERSION

KEY = b"test-signing-key"
CREATED = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)


def _card(names: list[str], **changes: Any) -> W.ModelCard:
    values: dict[str, Any] = {
        "kind": "transaction",
        "version": "batch-20260102",
        "feature_set_version": TXN_FEATURE_SET_VERSION,
        "feature_names": names,
        "created_at": CREATED,
        "trained_until": CREATED - timedelta(hours=3),
        "library_versions": W.library_versions(),
        "metrics": {"average_precision": 0.61, "recall_at_review": 0.8},
        "review_threshold": 0.3,
        "block_threshold": 0.9,
        "hybrid": W.Blend(online_weight=0.4, batch_weight=0.7, bias=-0.1),
    }
    values.update(changes)
    return W.ModelCard(**values)


def _tabular(n: int, seed: int, n_features: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Numeric data with missing values, where missingness of column 0 itself is predictive
    and column 0 is constant when present: the only split on it is a split on missing values
    (scikit-learn's ``num_threshold == inf``)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    absent = rng.random(n) < 0.3
    X[:, 0] = np.where(absent, np.nan, 1.0)
    logit = 1.5 * absent + X[:, 1] + X[:, 2] * X[:, 3] - 1.0
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    X[:, 1:][rng.random((n, n_features - 1)) < 0.15] = np.nan
    # a few values exactly on training values, so some land exactly on a threshold
    X[: n // 10, 4] = np.round(X[: n // 10, 4], 1)
    return X, y


@pytest.fixture(scope="module")
def hgb() -> tuple[HistGradientBoostingClassifier, list[str]]:
    X, y = _tabular(6000, seed=1)
    est = HistGradientBoostingClassifier(
        max_iter=60, max_leaf_nodes=15, early_stopping=False, random_state=0
    ).fit(X, y)
    return est, [f"f{i}" for i in range(X.shape[1])]


@pytest.fixture(scope="module")
def tree_model(hgb: tuple[HistGradientBoostingClassifier, list[str]]) -> W.BatchModel:
    est, names = hgb
    return W.BatchModel(_card(names), W.trees_from_sklearn(est, names))


# --- trees --------------------------------------------------------------------------------


def test_trees_reproduce_decision_function_exactly(
    hgb: tuple[HistGradientBoostingClassifier, list[str]], tree_model: W.BatchModel
) -> None:
    est, _ = hgb
    X, _ = _tabular(5000, seed=2)
    X[:50] = np.nan  # rows with nothing present
    np.testing.assert_allclose(
        tree_model.raw_matrix(X), est.decision_function(X), rtol=0, atol=1e-9
    )
    assert np.array_equal(tree_model.raw_matrix(X), est.decision_function(X))  # in fact, bitwise
    np.testing.assert_allclose(
        tree_model.score_matrix(X), est.predict_proba(X)[:, 1], rtol=0, atol=1e-12
    )


def test_export_has_missing_value_splits(tree_model: W.BatchModel) -> None:
    """The parity above covers both missing-value cases: a split on missing values only
    (threshold +inf, stored as null) and splits that send missing values left."""
    body = tree_model.body
    assert isinstance(body, W.Trees)
    nan_splits = [
        (t, i)
        for t, tree in enumerate(body.trees)
        for i, threshold in enumerate(tree.threshold)
        if threshold is None
    ]
    assert nan_splits, "no tree splits on missing values only"
    assert any(body.trees[t].feature[i] == 0 for t, i in nan_splits)  # the missingness column
    assert any(any(tree.missing_left) for tree in body.trees)
    assert any(
        not ml and f >= 0
        for tree in body.trees
        for ml, f in zip(tree.missing_left, tree.feature, strict=True)
    )


def test_trees_score_rows_equal_matrix_with_missing_as_nan(
    hgb: tuple[HistGradientBoostingClassifier, list[str]], tree_model: W.BatchModel
) -> None:
    est, names = hgb
    X, _ = _tabular(300, seed=3)
    rows = [
        {n: float(v) for n, v in zip(names, row, strict=True) if not math.isnan(v)} for row in X
    ]
    rows[0]["not_a_model_feature"] = 123.0  # ignored
    np.testing.assert_array_equal(tree_model.raw_rows(rows), est.decision_function(X))
    assert tree_model.score_rows([]).shape == (0,)


def test_infinite_inputs_route_like_the_largest_finite_value(tree_model: W.BatchModel) -> None:
    X, _ = _tabular(200, seed=4)
    big = np.finfo(np.float64).max
    with_inf, with_max = X.copy(), X.copy()
    with_inf[::2, 1], with_max[::2, 1] = np.inf, big
    with_inf[1::2, 2], with_max[1::2, 2] = -np.inf, -big
    np.testing.assert_array_equal(tree_model.raw_matrix(with_inf), tree_model.raw_matrix(with_max))


def test_many_rows_are_walked_in_blocks_with_the_same_result(
    hgb: tuple[HistGradientBoostingClassifier, list[str]],
    tree_model: W.BatchModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    est, _ = hgb
    X, _ = _tabular(1_000, seed=4)
    monkeypatch.setattr(W, "_WALK_CELLS", 997)  # blocks of a few rows, the last one short
    np.testing.assert_array_equal(tree_model.raw_matrix(X), est.decision_function(X))


def test_trees_refuse_categorical_multiclass_and_unfitted() -> None:
    rng = np.random.default_rng(0)
    X = rng.integers(0, 4, size=(300, 3)).astype(float)
    y = (X[:, 0] > 1).astype(int)
    names = ["a", "b", "c"]
    categorical = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0]).fit(X, y)
    with pytest.raises(ValueError, match="categorical"):
        W.trees_from_sklearn(categorical, names)
    multiclass = HistGradientBoostingClassifier(max_iter=3).fit(X, X[:, 0].astype(int))
    with pytest.raises(ValueError, match="binary"):
        W.trees_from_sklearn(multiclass, names)
    with pytest.raises(ValueError, match="not fitted"):
        W.trees_from_sklearn(HistGradientBoostingClassifier(), names)
    fitted = HistGradientBoostingClassifier(max_iter=3).fit(X, y)
    with pytest.raises(ValueError, match="2 feature names"):
        W.trees_from_sklearn(fitted, names[:2])


def test_platt_calibration_matches_calibrated_classifier(
    hgb: tuple[HistGradientBoostingClassifier, list[str]], tree_model: W.BatchModel
) -> None:
    est, _ = hgb
    X_cal, y_cal = _tabular(3000, seed=5)
    calibrated = CalibratedClassifierCV(FrozenEstimator(est), method="sigmoid").fit(X_cal, y_cal)
    model = tree_model.replace(calibration=W.calibration_from_sklearn(calibrated))
    assert model.calibration != W.IDENTITY
    X, _ = _tabular(2000, seed=6)
    np.testing.assert_allclose(
        model.score_matrix(X), calibrated.predict_proba(X)[:, 1], rtol=0, atol=1e-12
    )


# --- linear -------------------------------------------------------------------------------

DENSE = ["amount_log", "velocity_1h", "ratio"]
TOKENS = ["tok_1", "tok_7", "tok_42", "tok_99"]


def _linear_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dense = rng.normal(loc=[3.0, 10.0, -2.0], scale=[1.0, 5.0, 0.1], size=(n, 3))
    tokens = (rng.random((n, len(TOKENS))) < 0.3) * rng.integers(1, 4, size=(n, len(TOKENS)))
    y = (dense[:, 0] + tokens[:, 1] - tokens[:, 2] + rng.normal(size=n) > 3.5).astype(int)
    return dense, tokens.astype(float), y


def _rows(dense: np.ndarray, tokens: np.ndarray) -> list[dict[str, float]]:
    """Feature dicts as the stream makes them: absent tokens are simply not there."""
    rows = []
    for d, t in zip(dense, tokens, strict=True):
        row = dict(zip(DENSE, d.tolist(), strict=True))
        row.update({name: v for name, v in zip(TOKENS, t.tolist(), strict=True) if v})
        rows.append(row)
    return rows


@pytest.mark.parametrize(
    "make",
    [
        lambda: LogisticRegression(C=0.5),
        lambda: SGDClassifier(loss="log_loss", alpha=1e-3, random_state=0),
    ],
)
def test_linear_export_matches_predict_proba(make: Callable[[], Any]) -> None:
    dense, tokens, y = _linear_data(3000, seed=7)
    idf = {"tok_1": 1.2, "tok_7": 0.8, "tok_42": 2.5, "tok_99": 1.0}
    scaler = StandardScaler().fit(dense)
    design = np.hstack([scaler.transform(dense), tokens * np.array([idf[t] for t in TOKENS])])
    est = make().fit(design, y)
    names = DENSE + TOKENS
    body = W.linear_from_sklearn(est, names, scaler=scaler, scaled=DENSE, idf=idf)
    model = W.BatchModel(_card(names), body)
    expected = est.predict_proba(design)[:, 1]
    np.testing.assert_allclose(model.score_rows(_rows(dense, tokens)), expected, atol=1e-9)
    raw = np.hstack([dense, tokens])
    np.testing.assert_allclose(model.score_matrix(raw), expected, atol=1e-9)
    sparse = scipy.sparse.csr_matrix(raw)
    np.testing.assert_allclose(model.score_matrix(sparse), expected, atol=1e-9)


def test_linear_missing_is_zero_and_refusals() -> None:
    body = W.Linear(
        weights={"a": 2.0, "tok_3": 1.0},
        intercept=-1.0,
        scaling={"a": W.Scale(mean=1.0, scale=2.0)},
        idf={"tok_3": 3.0},
    )
    model = W.BatchModel(_card(["a", "tok_3"]), body)
    raw = model.raw_rows([{}, {"a": 3.0}, {"tok_3": 1.0, "other": 9.0}, {"a": math.nan}])
    np.testing.assert_allclose(raw, [-1.0 - 1.0, -1.0 + 2.0, -2.0 + 3.0, -2.0])
    with pytest.raises(ValueError, match="loss='hinge'"):
        W.linear_from_sklearn(SGDClassifier(loss="hinge").fit([[0.0], [1.0]], [0, 1]), ["a"])
    multiclass = LogisticRegression().fit([[0.0], [1.0], [2.0]], [0, 1, 2])
    with pytest.raises(ValueError, match="binary"):
        W.linear_from_sklearn(multiclass, ["a"])


# --- lookups ------------------------------------------------------------------------------


def test_lookups_supply_their_features(
    hgb: tuple[HistGradientBoostingClassifier, list[str]], tree_model: W.BatchModel
) -> None:
    est, names = hgb
    by_entity = W.Lookup(
        key="entity_id",
        features=["f5", "f6"],
        rows={"card-1": [0.5, -1.0], "card-2": [2.0, 3.0]},
        default=[0.0, 0.0],
    )
    by_scope = W.Lookup(key="scope_id", features=["f7"], rows={"t-9": [4.0]}, default=[-4.0])
    model = tree_model.replace(lookups=[by_entity, by_scope])
    X, _ = _tabular(4, seed=8)
    rows = [{n: float(v) for n, v in zip(names, row, strict=True)} for row in X]
    keys = [
        {"entity_id": "card-1", "scope_id": "t-9"},
        {"entity_id": "card-2", "scope_id": "t-0"},
        {"entity_id": "unknown"},
        {},
    ]
    expected = X.copy()  # the tables replace whatever the events carried under those names
    expected[:, 5:7] = [[0.5, -1.0], [2.0, 3.0], [0.0, 0.0], [0.0, 0.0]]
    expected[:, 7] = [4.0, -4.0, -4.0, -4.0]
    np.testing.assert_array_equal(model.raw_rows(rows, keys), est.decision_function(expected))
    without_keys = X.copy()
    without_keys[:, 5:7], without_keys[:, 7] = 0.0, -4.0
    np.testing.assert_array_equal(model.raw_rows(rows), est.decision_function(without_keys))
    with pytest.raises(ValueError, match="3 keys for 4 rows"):
        model.score_rows(rows, keys[:3])


def test_columns_score_like_rows(
    hgb: tuple[HistGradientBoostingClassifier, list[str]], tree_model: W.BatchModel
) -> None:
    """``raw_columns`` (a frame's columns) gives ``raw_rows``' numbers bit for bit: missing
    names, missing values and lookup keys alike."""
    _, names = hgb
    by_scope = W.Lookup(key="scope_id", features=["f7"], rows={"t-9": [4.0]}, default=[-4.0])
    model = tree_model.replace(lookups=[by_scope])
    X, _ = _tabular(50, seed=9)
    X[::7, 2] = np.nan
    rows = [
        {n: float(v) for n, v in zip(names, row, strict=True) if n != "f3" and not np.isnan(v)}
        for row in X
    ]
    scopes = ["t-9" if i % 3 else "t-0" for i in range(50)]
    columns = {n: X[:, j] for j, n in enumerate(names) if n != "f3"}
    np.testing.assert_array_equal(
        model.raw_columns(columns, {"scope_id": scopes}, n=50),
        model.raw_rows(rows, [{"scope_id": s} for s in scopes]),
    )
    np.testing.assert_array_equal(model.raw_columns(columns, n=50), model.raw_rows(rows))


def test_linear_lookup() -> None:
    lookup = W.Lookup(key="scope_id", features=["rate"], rows={"s": [0.5]}, default=[0.1])
    body = W.Linear(weights={"rate": 4.0, "a": 1.0}, intercept=0.0)
    model = W.BatchModel(_card(["a", "rate"]), body, lookups=[lookup])
    raw = model.raw_rows([{"a": 1.0, "rate": 100.0}, {"a": 1.0}], [{"scope_id": "s"}, {}])
    np.testing.assert_allclose(raw, [1.0 + 2.0, 1.0 + 0.4])


@pytest.mark.parametrize(
    ("lookup", "reason"),
    [
        (W.Lookup(key="entity_id", features=["zz"], rows={}, default=[0.0]), "not in card"),
        (W.Lookup(key="entity_id", features=["f1"], rows={"x": [1.0, 2.0]}, default=[0.0]), "row"),
        (W.Lookup(key="entity_id", features=["f1"], rows={}, default=[math.inf]), "non-finite"),
    ],
)
def test_bad_lookups_refused(tree_model: W.BatchModel, lookup: W.Lookup, reason: str) -> None:
    with pytest.raises(W.InvalidWeights, match=reason):
        tree_model.replace(lookups=[lookup])


# --- signing ------------------------------------------------------------------------------


def _linear_model() -> W.BatchModel:
    lookup = W.Lookup(
        key="entity_id", features=["sender_rate"], rows={"x@y.z": [0.2]}, default=[0.0]
    )
    body = W.Linear(
        weights={"caps": 1.5, "tok_5": 0.3, "sender_rate": 2.0}, intercept=-3.0, idf={"tok_5": 2.0}
    )
    card = _card(
        ["caps", "tok_5", "sender_rate"],
        kind="email",
        feature_set_version=EMAIL_FEATURE_SET_VERSION,
    )
    return W.BatchModel(card, body, W.Calibration(a=0.9, b=0.1), [lookup])


def test_sign_verify_round_trip(tree_model: W.BatchModel) -> None:
    X, _ = _tabular(500, seed=9)
    model = tree_model.replace(calibration=W.Calibration(a=1.3, b=-0.2))
    restored = W.verify(
        W.sign(model, KEY), KEY, kind="transaction", feature_set_version=TXN_FEATURE_SET_VERSION
    )
    assert restored == model
    assert restored.card == model.card and restored.card.created_at == CREATED
    np.testing.assert_array_equal(restored.score_matrix(X), model.score_matrix(X))

    linear = _linear_model()
    again = W.verify(W.sign(linear, KEY), KEY, kind="email")
    rows = [{"caps": 0.3, "tok_5": 2.0}, {"caps": 0.0}]
    keys = [{"entity_id": "x@y.z"}, {"entity_id": "other"}]
    assert again == linear
    np.testing.assert_array_equal(again.score_rows(rows, keys), linear.score_rows(rows, keys))
    assert W.peek(W.sign(linear, KEY)) == ("email", linear.version)


def _envelope(blob: bytes) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.json.decode(blob)
    return result


def _rewrap(blob: bytes, **changes: Any) -> bytes:
    """The envelope with some fields changed, the signature left as it was."""
    envelope = _envelope(blob)
    envelope.update(changes)
    return msgspec.json.encode(envelope)


def _payload(blob: bytes) -> bytes:
    return msgspec.json.decode(blob, type=W.Envelope).payload


def _resign_bytes(blob: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    """The payload bytes edited and signed again with the right key: what an attacker holding
    the key (or a buggy exporter) could produce."""
    payload = edit(_payload(blob))
    envelope = _envelope(blob)
    envelope["payload"] = base64.b64encode(payload).decode()
    envelope["hmac_sha256"] = hmac.new(KEY, payload, hashlib.sha256).hexdigest()
    return msgspec.json.encode(envelope)


def _resign(blob: bytes, edit: Callable[[dict[str, Any]], Any]) -> bytes:
    """:func:`_resign_bytes` with ``edit`` changing the decoded payload in place."""

    def edited(payload: bytes) -> bytes:
        document = msgspec.json.decode(payload)
        edit(document)
        return msgspec.json.encode(document)

    return _resign_bytes(blob, edited)


def _flip_payload_byte(blob: bytes) -> bytes:
    payload = bytearray(_payload(blob))
    payload[len(payload) // 2] ^= 0x01
    return _rewrap(blob, payload=base64.b64encode(payload).decode())


def _set_child(document: dict[str, Any], value: int) -> None:
    tree = document["body"]["trees"][0]
    node = tree["feature"].index(next(f for f in tree["feature"] if f >= 0))
    tree["left"][node] = value


def _set_weight_text(payload: bytes, text: bytes) -> bytes:
    document = msgspec.json.decode(payload)
    name = next(iter(document["body"]["weights"]))
    encoded = msgspec.json.encode(document)
    marker = msgspec.json.encode({name: document["body"]["weights"][name]})[1:-1]
    assert marker in encoded
    return encoded.replace(marker, msgspec.json.encode(name) + b":" + text, 1)


TAMPERING: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("flipped payload byte", _flip_payload_byte, "signature mismatch"),
    ("changed signature", lambda b: _rewrap(b, hmac_sha256="0" * 64), "signature mismatch"),
    ("signature not hex", lambda b: _rewrap(b, hmac_sha256="zz"), "bad weights envelope"),
    ("truncated", lambda b: b[: len(b) // 2], "bad envelope"),
    ("garbage", lambda b: b"\x00\xffnot json at all", "bad envelope"),
    ("empty", lambda b: b"", "bad envelope"),
    ("other format", lambda b: _rewrap(b, format="something-else"), "bad envelope"),
    ("newer format", lambda b: _rewrap(b, format_version=2), "unknown weights format version 2"),
    ("payload not base64", lambda b: _rewrap(b, payload="%%%"), "bad weights envelope"),
    ("envelope claims other kind", lambda b: _rewrap(b, kind="email"), "envelope says email"),
    (
        "child index out of range",
        lambda b: _resign(b, lambda d: _set_child(d, 10**6)),
        "malformed weights payload: tree 0 node .*: child 1000000",
    ),
    (
        "child index pointing back (a loop)",
        lambda b: _resign(b, lambda d: _set_child(d, 0)),
        "malformed weights payload: tree 0 node .*: child 0",
    ),
    (
        "feature index out of range",
        lambda b: _resign(b, lambda d: d["body"]["trees"][0]["feature"].__setitem__(0, 99)),
        "feature 99 is out of range",
    ),
    (
        "ragged node lists",
        lambda b: _resign(b, lambda d: d["body"]["trees"][1]["value"].pop()),
        "differ in length",
    ),
    (
        "NaN leaf value (encoded as null)",
        lambda b: _resign(b, lambda d: d["body"]["trees"][0]["value"].__setitem__(-1, math.nan)),
        "malformed weights payload: Expected `float`, got `null`",
    ),
    (
        "unknown field",
        lambda b: _resign(b, lambda d: d["card"].__setitem__("note", "hi")),
        "malformed weights payload: Object contains unknown field `note`",
    ),
    (
        "wrong type",
        lambda b: _resign(b, lambda d: d["body"].__setitem__("baseline", "0.1")),
        "malformed weights payload: Expected `float`",
    ),
]


@pytest.mark.parametrize(("case", "tamper", "reason"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_tampered_blobs_refused(
    tree_model: W.BatchModel, case: str, tamper: Callable[[bytes], bytes], reason: str
) -> None:
    blob = tamper(W.sign(tree_model, KEY))
    with pytest.raises(W.InvalidWeights, match=reason) as info:
        W.verify(blob, KEY, kind="transaction", feature_set_version=TXN_FEATURE_SET_VERSION)
    assert info.value.reason == str(info.value)


def test_nan_weight_resigned_refused() -> None:
    blob = W.sign(_linear_model(), KEY)
    for text in (b"NaN", b"1e999", b"null"):
        bad = _resign_bytes(blob, functools.partial(_set_weight_text, text=text))
        with pytest.raises(W.InvalidWeights, match="malformed weights payload"):
            W.verify(bad, KEY, kind="email")


def test_wrong_key_kind_and_feature_set_refused(tree_model: W.BatchModel) -> None:
    blob = W.sign(tree_model, KEY)
    with pytest.raises(W.InvalidWeights, match="signature mismatch"):
        W.verify(blob, b"another-key", kind="transaction")
    with pytest.raises(W.InvalidWeights, match="wrong kind: the model scores 'transaction'"):
        W.verify(blob, KEY, kind="email", feature_set_version=TXN_FEATURE_SET_VERSION)
    with pytest.raises(W.InvalidWeights, match=r"incompatible feature set.*'txn-v999'"):
        W.verify(blob, KEY, kind="transaction", feature_set_version="txn-v999")
    old = W.sign(tree_model.with_card(feature_set_version="txn-v0"), KEY)
    with pytest.raises(W.InvalidWeights, match="trained on 'txn-v0'"):
        W.verify(old, KEY, kind="transaction")


def test_empty_key_refused(tree_model: W.BatchModel) -> None:
    with pytest.raises(W.InvalidWeights, match="FRAUD_MODEL_SIGNING_KEY is empty"):
        W.sign(tree_model, b"")
    blob = W.sign(tree_model, KEY)
    with pytest.raises(W.InvalidWeights, match="FRAUD_MODEL_SIGNING_KEY is empty"):
        W.verify(blob, b"", kind="transaction")


# --- validation of what the batch job builds -----------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"created_at": datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=1)))}, "UTC"),
        ({"created_at": datetime(2026, 1, 2)}, "malformed weights"),
        ({"review_threshold": 0.95}, "review"),
        ({"metrics": {"auc": math.nan}}, "non-finite number in card.metrics"),
        ({"version": "current"}, "reserved"),
        ({"version": "a/b"}, "letters, digits"),
        ({"feature_names": ["a", "a"]}, "twice"),
        ({"hybrid": W.Blend(online_weight=math.inf)}, "non-finite number in card.hybrid"),
        ({"block_threshold": -0.1, "review_threshold": -0.2}, "0 <= review"),
    ],
)
def test_bad_cards_refused(changes: dict[str, Any], reason: str) -> None:
    body = W.Linear(weights={"a": 1.0}, intercept=0.0)
    card = _card(["a"], **changes)
    with pytest.raises(W.InvalidWeights, match=reason):
        W.BatchModel(card, body)


def test_bad_bodies_refused(tree_model: W.BatchModel) -> None:
    names = ["a", "tok_1"]
    for body, reason in [
        (W.Linear(weights={"a": math.nan}, intercept=0.0), "non-finite"),
        (W.Linear(weights={"b": 1.0}, intercept=0.0), "not in card"),
        (W.Linear(weights={}, intercept=0.0, scaling={"a": W.Scale(0.0, 0.0)}), "scale"),
        (W.Linear(weights={}, intercept=0.0, idf={"a": 2.0}), "tok_"),
    ]:
        with pytest.raises(W.InvalidWeights, match=reason):
            W.BatchModel(_card(names), body)
    with pytest.raises(W.InvalidWeights, match="non-finite number in calibration"):
        tree_model.replace(calibration=W.Calibration(a=math.nan, b=0.0))
    with pytest.raises(W.InvalidWeights, match="columns"):
        tree_model.with_card(feature_names=["only_one"])


# --- blending -----------------------------------------------------------------------------


def test_blend() -> None:
    even = W.Blend()
    assert W.blend(even, 0.5, 0.5) == pytest.approx(0.5)
    assert W.blend(even, 0.9, 0.9) == pytest.approx(0.9)  # weights summing to 1 keep agreement
    assert W.blend(W.Blend(online_weight=1.0, batch_weight=0.0), 0.3, 0.99) == pytest.approx(0.3)
    assert W.blend(W.Blend(bias=1.0), 0.5, 0.5) == pytest.approx(1.0 / (1.0 + math.exp(-1.0)))
    assert W.blend(even, 0.2, 0.9) > W.blend(even, 0.2, 0.5) > W.blend(even, 0.2, 0.1)
    # extremes are clipped, never inf or NaN
    top, bottom = W.blend(even, 1.0, 1.0), W.blend(even, 0.0, 0.0)
    assert top == pytest.approx(1.0 - 1e-6) and bottom == pytest.approx(1e-6)
    assert W.blend(even, 0.0, 1.0) == pytest.approx(0.5)
    card = _card(["a"])
    online = np.array([0.0, 0.01, 0.3, 0.5, 0.97, 1.0])
    batch = np.array([1.0, 0.2, 0.3, 0.01, 0.99, 1.0])
    expected = [W.blend(card, o, b) for o, b in zip(online, batch, strict=True)]
    np.testing.assert_allclose(W.blend_array(card, online, batch), expected, rtol=1e-12)


# --- speed (reported, and guarded loosely) --------------------------------------------------


def _random_tree(rng: np.random.Generator, n_leaves: int, n_features: int) -> W.Tree:
    """A random tree of ``n_leaves`` leaves in depth-first order (children after parents), each
    split sharing its leaves unevenly at random between its sides, as boosted trees do."""
    nodes: list[tuple[int, float | None, bool, int, int, float]] = []

    def grow(leaves: int) -> int:
        at = len(nodes)
        nodes.append((-1, 0.0, False, 0, 0, float(rng.normal())))
        if leaves > 1:
            left_leaves = int(rng.integers(1, leaves))
            left = grow(left_leaves)
            right = grow(leaves - left_leaves)
            threshold = None if rng.random() < 0.05 else float(rng.normal())
            feature = int(rng.integers(n_features))
            nodes[at] = (feature, threshold, bool(rng.random() < 0.5), left, right, 0.0)
        return at

    grow(n_leaves)
    f, t, m, left, right, v = (list(c) for c in zip(*nodes, strict=True))
    return W.Tree(feature=f, threshold=t, missing_left=m, left=left, right=right, value=v)


def test_scoring_2000_rows_is_fast() -> None:
    """100 trees of 31 leaves over 30 features: 2000 feature dicts in well under 50 ms
    (about 12 ms on the development machine; the bound is loose for slow CI machines)."""
    rng = np.random.default_rng(10)
    names = [f"x{i}" for i in range(30)]
    trees = W.Trees(
        n_features=30, baseline=-2.0, trees=[_random_tree(rng, 31, 30) for _ in range(100)]
    )
    model = W.BatchModel(_card(names), trees)
    X = rng.normal(size=(2000, 30))
    X[rng.random(X.shape) < 0.1] = np.nan
    rows = [{n: float(v) for n, v in zip(names, row, strict=True) if v == v} for row in X]
    np.testing.assert_array_equal(model.raw_rows(rows), model.raw_matrix(X))
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        model.score_rows(rows)
        best = min(best, time.perf_counter() - start)
    print(f"\nscore_rows: 2000 rows, 100 trees of 31 leaves: {best * 1e3:.1f} ms")
    assert best < 0.2, f"2000 rows took {best * 1e3:.1f} ms"
