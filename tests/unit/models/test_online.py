"""The online models: a contract every shipped model passes, state validation, and learning.

``check_online_model`` plays the part of River's ``check_estimator``: it is run on every model
the worker can load (one per event kind), on feature dicts made by the real feature code.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from sklearn.metrics import average_precision_score

from models import features as F
from models.names import EVENT_KINDS, EventKind
from models.online import OnlineModel
from tests.factories import T0, email, transaction

Stream = list[tuple[dict[str, float], bool]]

HOUR = 3600.0


def _transaction_stream(n: int, seed: int) -> Stream:
    """Separable transactions: positives are large amounts on a new device, online."""
    rng = random.Random(seed)
    history = F.CardHistory()
    stream = []
    for i in range(n):
        positive = rng.random() < 0.2
        txn = transaction(
            i,
            at=T0 + i * 600.0,
            amount=rng.uniform(800, 2000) if positive else rng.uniform(5, 80),
            device_id=f"new-{i}" if positive else "dev-1",
            channel="online" if positive else "pos",
            extra={"v1": rng.gauss(2.0 if positive else 0.0, 1.0)},
        )
        stream.append((F.transaction_features(txn, history), positive))
        history = F.card_history_after(history, txn)
    return stream


def _email_stream(n: int, seed: int) -> Stream:
    """Separable emails: positives are urgent money mails with a look-alike link."""
    rng = random.Random(seed)
    stream = []
    for i in range(n):
        positive = rng.random() < 0.2
        if positive:
            mail = email(
                i,
                sender=f"security{i % 5}@paypa1.com",
                subject=rng.choice(["URGENT: account suspended", "You won a prize!!!"]),
                body="Verify now to claim your $500 refund: http://10.1.2.3/login",
            )
        else:
            mail = email(i, subject=rng.choice(["Meeting notes", "Lunch on Friday?"]))
        stream.append((F.email_features(mail, F.SenderHistory()), positive))
    return stream


STREAMS: dict[EventKind, Callable[[int, int], Stream]] = {
    "transaction": _transaction_stream,
    "email": _email_stream,
}


def _round_trip(model: OnlineModel) -> OnlineModel:
    return OnlineModel.from_state(json.loads(json.dumps(model.to_state())), kind=model.kind)


def check_online_model(model: OnlineModel, stream: Stream) -> None:
    """The contract of a shipped online model; ``stream`` must be separable, both classes."""
    train, test = stream[: len(stream) // 2], stream[len(stream) // 2 :]
    positives = [x for x, y in test if y]
    negatives = [x for x, y in test if not y]
    assert positives and negatives

    def mean_score(xs: list[dict[str, float]]) -> float:
        return sum(model.score_one(x) for x in xs) / len(xs)

    # Scores are probabilities, and scoring never changes the model.
    before_pos = mean_score(positives)
    state = model.to_state()
    for x, _ in stream:
        assert 0.0 <= model.score_one(x) <= 1.0
    assert model.to_state() == state

    # Learning a separable stream raises positives above negatives.
    learned = model.learned
    for x, y in train:
        model.learn_one(x, y)
    assert model.learned == learned + len(train)
    assert model.version == f"online-{model.kind}-{model.learned}"
    after_pos, after_neg = mean_score(positives), mean_score(negatives)
    assert after_pos > before_pos
    assert after_pos > after_neg + 0.5

    # Still probabilities on extreme inputs, still no mutation by scoring.
    state = model.to_state()
    for x in (positives[0], negatives[0]):
        for factor in (-1e6, 1e6):
            assert 0.0 <= model.score_one({k: v * factor for k, v in x.items()}) <= 1.0
    assert 0.0 <= model.score_one({"never_seen": 3.0, "tok_1": 1.0}) <= 1.0
    for x, _ in stream:
        model.reasons_one(x)
    assert model.to_state() == state

    # Reasons: features of x, positive contributions, largest first.
    for x in positives[:20]:
        reasons = model.reasons_one(x, top=3)
        assert 1 <= len(reasons) <= 3
        contributions = [r.contribution for r in reasons]
        assert contributions == sorted(contributions, reverse=True)
        assert all(c > 0.0 for c in contributions)
        assert all(r.feature in x and r.value == x[r.feature] for r in reasons)

    # The state survives JSON exactly, and a restored model keeps learning identically.
    restored = _round_trip(model)
    twin = copy.deepcopy(model)
    assert restored.to_state() == model.to_state()
    assert restored.version == model.version
    for x, _ in stream:
        assert restored.score_one(x) == model.score_one(x)
        assert restored.reasons_one(x) == model.reasons_one(x)
    for x, y in test:
        restored.learn_one(x, y)
        twin.learn_one(x, y)
    assert restored.to_state() == twin.to_state()
    assert [restored.score_one(x) for x, _ in stream] == [twin.score_one(x) for x, _ in stream]


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_every_shipped_model_passes_the_contract(kind: EventKind) -> None:
    check_online_model(OnlineModel(kind), STREAMS[kind](400, 1))


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_untrained_model_scores_the_initial_score(kind: EventKind) -> None:
    model = OnlineModel(kind, initial_score=0.02)
    x, _ = STREAMS[kind](1, 0)[0]
    assert model.score_one(x) == pytest.approx(0.02)
    assert model.reasons_one(x) == []
    assert model.version == f"online-{kind}-0"


def test_positive_weight_moves_the_model_more() -> None:
    x = {"amount_log": 1.0, "is_online": 1.0}
    light = OnlineModel("transaction", positive_weight=1.0)
    heavy = OnlineModel("transaction", positive_weight=10.0)
    for model in (light, heavy):
        model.learn_one({"amount_log": 0.0, "is_online": 0.0}, False)
        model.learn_one(x, True)
    assert heavy.score_one(x) > light.score_one(x)


def test_non_finite_features_are_refused() -> None:
    model = OnlineModel("transaction")
    with pytest.raises(ValueError, match="amount_log"):
        model.learn_one({"amount_log": math.nan}, True)
    with pytest.raises(ValueError, match="amount_log"):
        model.score_one({"amount_log": math.inf})
    assert model.learned == 0


def test_bad_hyperparameters_are_refused() -> None:
    with pytest.raises(ValueError, match="lr"):
        OnlineModel("transaction", lr=0.0)
    with pytest.raises(ValueError, match="initial_score"):
        OnlineModel("email", initial_score=1.0)
    with pytest.raises(ValueError, match="kind"):
        OnlineModel("sms")  # type: ignore[arg-type]


def _trained_state() -> dict[str, Any]:
    model = OnlineModel("transaction")
    for x, y in _transaction_stream(50, seed=3):
        model.learn_one(x, y)
    state: dict[str, Any] = json.loads(json.dumps(model.to_state()))
    return state


def _set(state: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    state = copy.deepcopy(state)
    *parents, last = path.split(".")
    node = state
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return state


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("kind", "sms", "kind"),
        ("feature_set_version", "txn-v0", "feature set 'txn-v0'"),
        ("format", "pickle", "format"),
        ("format_version", 2, "format version 2"),
        ("intercept", math.nan, "non-finite numbers in intercept"),
        ("weights.amount_log", math.inf, "non-finite numbers in weights"),
        ("scaler.means.amount_log", -math.inf, "non-finite numbers in scaler means"),
        ("scaler.vars.amount_log", -1.0, "scaler.vars"),
        ("scaler.counts.amount_log", 1.5, "scaler.counts"),
        ("scaler.counts.amount_log", _DELETE, "differ in features"),
        ("learned", -1, "learned"),
        ("learned", True, "learned"),
        ("weights", [1.0], "weights"),
        ("hyperparameters.lr", 0.0, "hyperparameters.lr"),
        ("hyperparameters.momentum", 0.9, "momentum"),
        ("optimizer.name", "adam", "optimizer.name"),
        ("scaler", _DELETE, "scaler"),
    ],
)
def test_malformed_state_is_a_clear_value_error(path: str, value: Any, message: str) -> None:
    state = _set(_trained_state(), path, value)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        OnlineModel.from_state(state)


def test_state_of_another_kind_is_refused_when_a_kind_is_asked() -> None:
    state = OnlineModel("email").to_state()
    assert OnlineModel.from_state(state).kind == "email"
    with pytest.raises(ValueError, match="is for 'email', expected 'transaction'"):
        OnlineModel.from_state(state, kind="transaction")
    with pytest.raises(ValueError, match="invalid online-model state"):
        OnlineModel.from_state("not a dict")


def test_state_is_plain_json_types() -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            assert all(isinstance(k, str) for k in node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        else:
            assert type(node) in (str, int, float, bool), type(node)

    state = _trained_state()
    walk(OnlineModel.from_state(state).to_state())
    assert state["feature_set_version"] == F.TXN_FEATURE_SET_VERSION


def test_a_diverged_model_cannot_be_saved() -> None:
    model = OnlineModel("transaction")
    model.learn_one({"amount_log": 1.0}, True)
    model.classifier_.intercept = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        model.to_state()


def test_learns_fraud_as_large_amounts_at_night() -> None:
    """Prequential run (score, then learn the label) on a synthetic card stream with 2 % fraud;
    the average precision on the second half must be far above the 2 % of chance."""
    rng = random.Random(7)
    model = OnlineModel("transaction")
    histories: dict[str, F.CardHistory] = {}
    scores, labels = [], []
    n = 8000
    for i in range(n):
        card = f"card-{rng.randrange(300)}"
        fraud = rng.random() < 0.02
        day = T0 + (i * 20 * 86_400.0 / n) // 86_400.0 * 86_400.0
        if fraud:
            hour, amount = rng.uniform(0, 5), rng.lognormvariate(6.5, 0.5)  # ~ 700
        elif rng.random() < 0.5:
            hour, amount = rng.uniform(0, 24), rng.lognormvariate(3.5, 0.8)  # ~ 35, any hour
        else:
            hour, amount = rng.uniform(8, 22), rng.lognormvariate(5.5, 0.8)  # ~ 250, by day
        txn = transaction(i, at=day + hour * HOUR, amount=amount, card_id=card)
        history = histories.get(card, F.CardHistory())
        x = F.transaction_features(txn, history)
        histories[card] = F.card_history_after(history, txn)
        if i >= n // 2:
            scores.append(model.score_one(x))
            labels.append(fraud)
        model.learn_one(x, fraud)
    base_rate = sum(labels) / len(labels)
    ap = average_precision_score(labels, scores)
    assert base_rate < 0.05
    assert ap > 0.9, f"average precision {ap:.3f} (chance {base_rate:.3f})"
