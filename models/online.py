"""The online models: River's StandardScaler and LogisticRegression, learning one label at a time.

One :class:`OnlineModel` per kind of event. Dense features are standard-scaled with running
statistics; hashed text features (``tok_*``) are already on a unit scale and go to the
logistic regression as they are. Positive labels (fraud, spam) weigh ``positive_weight``
times a negative one, because positives are under 1 % of the labels and would otherwise
barely move the weights.

The state is JSON, never a pickle: it lives in Redis, and unpickling what Redis holds would
run whatever code a writer to Redis chose. :meth:`OnlineModel.to_state` gives plain
str/int/float/list/dict; :meth:`OnlineModel.from_state` validates every field and restores
the model exactly, so a restored model scores and keeps learning bit for bit like the
original.

The optimiser is plain SGD on purpose: River's Adam updates every weight it has ever seen on
each step (its moment vectors span the whole hashed vocabulary), which would make an email
step cost O(2**14) instead of O(its tokens).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Final, Literal

import msgspec
from river import linear_model, optim, preprocessing

from models.events import Reason
from models.features import FEATURE_SET_VERSIONS
from models.names import EVENT_KINDS, EventKind
from models.text import TEXT_FEATURE_PREFIX

STATE_FORMAT: Final = "fraudstream-online-model"
STATE_FORMAT_VERSION = 1


class OnlineModel:
    """A River StandardScaler | LogisticRegression for one kind of event.

    Parameters
    ----------
    kind
        ``"transaction"`` or ``"email"``; fixes the feature set the model accepts.
    lr
        SGD learning rate of the weights.
    l2
        L2 penalty on the weights of the features of each learned example.
    intercept_lr
        Learning rate of the intercept.
    positive_weight
        Sample weight of a positive label relative to a negative one (class imbalance).
    initial_score
        Score of an untrained model (sets the initial intercept): a fresh model must not
        flag every event it sees, as an intercept of 0 (score 0.5) would.

    Attributes
    ----------
    scaler_
        The River ``preprocessing.StandardScaler`` of the dense features.
    classifier_
        The River ``linear_model.LogisticRegression``.
    learned_
        Number of labels learned.

    ``version`` is ``online-<kind>-<learned>``: the same state always has the same version,
    and a replica restored from a checkpoint reports the version of the model it restores.

    >>> model = OnlineModel("transaction", lr=0.1)
    >>> for i in range(200):
    ...     model.learn_one({"amount_log": float(i % 10), "hour_sin": 0.5}, is_positive=i % 10 == 9)
    >>> round(model.score_one({"amount_log": 9.0, "hour_sin": 0.5}), 3)
    0.929
    >>> round(model.score_one({"amount_log": 1.0, "hour_sin": 0.5}), 5)
    6e-05
    >>> model.reasons_one({"amount_log": 9.0, "hour_sin": 0.5})  # hour_sin is constant: no push
    [Reason(feature='amount_log', value=9.0, contribution=6.95267655287584)]
    >>> model.version
    'online-transaction-200'
    """

    def __init__(
        self,
        kind: EventKind,
        *,
        lr: float = 0.02,
        l2: float = 1e-5,
        intercept_lr: float = 0.01,
        positive_weight: float = 10.0,
        initial_score: float = 0.01,
    ) -> None:
        if kind not in EVENT_KINDS:
            raise ValueError(f"kind must be one of {EVENT_KINDS}, not {kind!r}")
        _check_hyperparameters(lr, l2, intercept_lr, positive_weight, initial_score)
        self.kind: EventKind = kind
        self.lr = lr
        self.l2 = l2
        self.intercept_lr = intercept_lr
        self.positive_weight = positive_weight
        self.initial_score = initial_score
        self.scaler_ = preprocessing.StandardScaler()
        self.classifier_ = linear_model.LogisticRegression(
            optimizer=optim.SGD(lr),
            l2=l2,
            intercept_init=math.log(initial_score / (1.0 - initial_score)),
            intercept_lr=intercept_lr,
        )
        self.learned_ = 0

    @property
    def feature_set_version(self) -> str:
        """The feature set this model was trained on (and accepts)."""
        return FEATURE_SET_VERSIONS[self.kind]

    @property
    def learned(self) -> int:
        """Number of labels learned so far."""
        return self.learned_

    @property
    def version(self) -> str:
        """``online-<kind>-<labels learned>``, derived from the state, so never out of step."""
        return f"online-{self.kind}-{self.learned_}"

    def hyperparameters(self) -> dict[str, float]:
        """The constructor arguments beside ``kind``."""
        return {
            "lr": self.lr,
            "l2": self.l2,
            "intercept_lr": self.intercept_lr,
            "positive_weight": self.positive_weight,
            "initial_score": self.initial_score,
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"OnlineModel({self.kind!r}, {params}) learned={self.learned_}"

    # --- scoring and learning -----------------------------------------------------------

    def _scaled(self, x: dict[str, float]) -> dict[str, float]:
        """``x`` with dense features standard-scaled, text features as they are.

        The arithmetic is River's ``StandardScaler.transform_one`` exactly, but reads the
        statistics with ``.get``: River's own ``transform_one`` inserts zero entries into its
        defaultdicts for unseen features, which would make scoring change the state. Text
        features never enter the scaler, so only a feature without statistics needs the
        prefix test (a dense one it has not seen scales to 0, as in River).
        """
        means = self.scaler_.means
        vars_ = self.scaler_.vars
        out = {}
        for name, value in x.items():
            var = vars_.get(name)
            if var is None:
                out[name] = value if name.startswith(TEXT_FEATURE_PREFIX) else 0.0
            else:
                out[name] = (value - means[name]) / var**0.5 if var else 0.0
        return out

    def _dense(self, x: dict[str, float]) -> dict[str, float]:
        """The features the scaler learns: all but the text ones (transactions have none)."""
        if self.kind == "transaction":
            return x
        return {k: v for k, v in x.items() if not k.startswith(TEXT_FEATURE_PREFIX)}

    def score_one(self, x: dict[str, float]) -> float:
        """Probability that the event is positive (fraud, spam); does not change the model."""
        _check_finite(x)
        return float(self.classifier_.predict_proba_one(self._scaled(x))[True])

    def learn_one(self, x: dict[str, float], is_positive: bool) -> None:
        """Learn one label: update the scaler with ``x``, then the weights with the scaled ``x``
        (the order of a River pipeline's ``learn_one``); positives weigh ``positive_weight``."""
        _check_finite(x)
        self.scaler_.learn_one(self._dense(x))
        weight = self.positive_weight if is_positive else 1.0
        self.classifier_.learn_one(self._scaled(x), bool(is_positive), w=weight)
        self.learned_ += 1

    def reasons_one(self, x: dict[str, float], top: int = 3) -> list[Reason]:
        """The ``top`` features that raised the score most: weight x scaled value, the largest
        positive contributions first (ties by name); ``value`` is the feature as served."""
        weights = self.classifier_._weights
        contributions = [
            (weights.get(name, 0.0) * value, name) for name, value in self._scaled(x).items()
        ]
        raising = sorted((c for c in contributions if c[0] > 0.0), key=lambda c: (-c[0], c[1]))
        return [
            Reason(feature=name, value=float(x[name]), contribution=float(contribution))
            for contribution, name in raising[:top]
        ]

    # --- state --------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """The whole model as JSON-safe builtins (see :class:`ModelState`).

        Raises ``ValueError`` when a statistic or weight is not finite: such a model has
        diverged and must not overwrite a good checkpoint.
        """
        classifier = self.classifier_
        state = ModelState(
            format=STATE_FORMAT,
            format_version=STATE_FORMAT_VERSION,
            kind=self.kind,
            feature_set_version=self.feature_set_version,
            hyperparameters=Hyperparameters(**self.hyperparameters()),
            learned=self.learned_,
            scaler=ScalerState(
                counts=dict(self.scaler_.counts),
                means=dict(self.scaler_.means),
                vars=dict(self.scaler_.vars),
            ),
            weights=classifier._weights.to_dict(),
            intercept=float(classifier.intercept),
            optimizer=OptimizerState(name="sgd", n_iterations=classifier.optimizer.n_iterations),
        )
        _check_state_finite(state)
        result: dict[str, Any] = msgspec.to_builtins(state)
        return result

    @classmethod
    def from_state(cls, state: Any, *, kind: EventKind | None = None) -> OnlineModel:
        """The model saved by :meth:`to_state` (after a JSON round trip or not).

        Raises ``ValueError`` naming the problem when ``state`` is malformed, of another format
        version, of another kind than ``kind`` (when given), trained on another feature-set
        version than this code computes, or holds a non-finite number.
        """
        try:
            parsed = msgspec.convert(state, ModelState)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid online-model state: {exc}") from None
        _check_state_compatible(parsed, kind)
        _check_state_finite(parsed)
        model = cls(parsed.kind, **msgspec.structs.asdict(parsed.hyperparameters))
        model.scaler_.counts.update(parsed.scaler.counts)
        model.scaler_.means.update(parsed.scaler.means)
        model.scaler_.vars.update(parsed.scaler.vars)
        classifier = model.classifier_
        classifier._weights.update(parsed.weights)
        classifier.intercept = parsed.intercept
        classifier.optimizer.n_iterations = parsed.optimizer.n_iterations
        model.learned_ = parsed.learned
        return model


# --- the state schema -------------------------------------------------------------------

NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]
Positive = Annotated[float, msgspec.Meta(gt=0.0)]
Probability = Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)]


class Hyperparameters(msgspec.Struct, forbid_unknown_fields=True):
    """Constructor arguments of :class:`OnlineModel` (besides the kind)."""

    lr: Positive
    l2: NonNegative
    intercept_lr: NonNegative
    positive_weight: Positive
    initial_score: Probability


class ScalerState(msgspec.Struct, forbid_unknown_fields=True):
    """River ``StandardScaler`` running statistics per dense feature (``counts``, ``means``,
    ``vars``: population variance), all three with the same keys."""

    counts: dict[str, NonNegativeInt]
    means: dict[str, float]
    vars: dict[str, NonNegative]


class OptimizerState(msgspec.Struct, forbid_unknown_fields=True):
    """SGD with a constant rate: its only state is the step counter."""

    name: Literal["sgd"]
    n_iterations: NonNegativeInt


class ModelState(msgspec.Struct, forbid_unknown_fields=True):
    """The JSON document of one online model, format version 1."""

    format: Literal["fraudstream-online-model"]
    format_version: int
    kind: EventKind
    feature_set_version: str
    hyperparameters: Hyperparameters
    learned: NonNegativeInt
    scaler: ScalerState
    weights: dict[str, float]
    intercept: float
    optimizer: OptimizerState


def _check_hyperparameters(
    lr: float, l2: float, intercept_lr: float, positive_weight: float, initial_score: float
) -> None:
    """Reject values that cannot train: the message names the argument."""
    for name, value, ok in (
        ("lr", lr, lr > 0.0),
        ("l2", l2, l2 >= 0.0),
        ("intercept_lr", intercept_lr, intercept_lr >= 0.0),
        ("positive_weight", positive_weight, positive_weight > 0.0),
        ("initial_score", initial_score, 0.0 < initial_score < 1.0),
    ):
        if not (math.isfinite(value) and ok):
            raise ValueError(f"invalid online-model hyperparameter {name}={value!r}")


def _check_finite(x: dict[str, float]) -> None:
    """Features must be finite numbers: one NaN learned would poison every later score."""
    if not all(map(math.isfinite, x.values())):
        bad = sorted(k for k, v in x.items() if not math.isfinite(v))
        raise ValueError(f"non-finite feature values: {', '.join(bad)}")


class FeatureSetMismatch(ValueError):
    """A saved state was trained on another feature set than this code computes: after an
    upgrade that changed a feature's definition (``models.features.FEATURE_SET_VERSIONS``)."""


def _check_state_compatible(state: ModelState, kind: EventKind | None) -> None:
    if state.format_version != STATE_FORMAT_VERSION:
        raise ValueError(
            f"online-model state has format version {state.format_version}, "
            f"this code reads {STATE_FORMAT_VERSION}"
        )
    if kind is not None and state.kind != kind:
        raise ValueError(f"online-model state is for {state.kind!r}, expected {kind!r}")
    expected = FEATURE_SET_VERSIONS[state.kind]
    if state.feature_set_version != expected:
        raise FeatureSetMismatch(
            f"online-model state was trained on feature set {state.feature_set_version!r}, "
            f"this code computes {expected!r}"
        )
    scaler = state.scaler
    if not scaler.counts.keys() == scaler.means.keys() == scaler.vars.keys():
        raise ValueError("online-model state: scaler counts, means and vars differ in features")


def _check_state_finite(state: ModelState) -> None:
    groups = {
        "hyperparameters": msgspec.structs.asdict(state.hyperparameters).values(),
        "scaler means": state.scaler.means.values(),
        "scaler vars": state.scaler.vars.values(),
        "weights": state.weights.values(),
        "intercept": (state.intercept,),
    }
    for where, values in groups.items():
        if not all(map(math.isfinite, values)):
            raise ValueError(f"online-model state has non-finite numbers in {where}")
