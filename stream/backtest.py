"""``python -m stream backtest``: score a labelled dataset through the worker's own scoring path.

Why this exists: a detector's quality is only known on data it has not learned from yet, in
the order it would have seen it. The backtest replays events in event-time order through
:func:`stream.scoring.score_batch`, the function the live worker calls, with the same
features (``models.features``) and the same online model (``models.online``), and measures
the scores as they were given, before each label was learned (prequential evaluation).

Labels come back the way the worker gets them: ``--label-delay`` seconds of event time after
their event, in arrival order. A label that has arrived by the time of an event (arrival <=
event time) is learned before that event is scored, from the features served for its own
event (never recomputed, which would leak the future), and its (arrival time, positive)
outcome is added to its terminal or sender, exactly as the worker's label handler does
(``stream.worker.StreamWorker._learn``). Events between two label arrivals are scored in
batches of up to ``--batch-size``; the model does not change within a batch, as in the
worker, where learning runs between scoring steps. An event id seen a second time is scored
from the features served the first time and its label counts once, as in the worker.

The backtest needs no Kafka and no Redis: histories and label outcomes live in dicts. Its
scores equal the live worker's for the same events and the same starting model
(``tests/integration/test_backtest_parity.py`` checks it on a real worker). It scores with
the online model; ``--batch-compare`` then trains the nightly retrain's batch model on what
it scored and compares online, batch and hybrid on the retrain's test window
(``stream.backtest_batch``).

Sources: a CSV or Parquet file mapped with ``--map FIELD=COLUMN`` or ``--mapping FILE``
through ``models.tabular`` (the definition ``python -m producers replay`` uses), or a
generated stream (``--generate transactions|emails``). The generated stream comes from the
producers' simulators; ``stream`` stands on ``models`` only, so they are imported inside
:func:`generated_events`, when that option is used, and never by the worker.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import resource
import sys
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import numpy as np
import orjson
import polars as pl

from models import arguments, evaluation, plots
from models.events import Decision, Email, Transaction
from models.features import OUTCOME_CAP, OUTCOME_WINDOW_S, count_outcomes
from models.names import EventKind
from models.online import OnlineModel
from models.settings import Settings, SettingsError
from models.tabular import TableError, load, parse_mapping, read_spec_file
from stream.backtest_batch import BatchComparison, BatchComparisonError
from stream.scoring import SPECS, KindSpec, Thresholds, score_batch

E = TypeVar("E", Transaction, Email)
H = TypeVar("H")

DEFAULT_START = 1_735_689_600.0
"""2025-01-01T00:00:00Z: where generated streams and synthesized or relative times start,
fixed so that a backtest gives the same figures on every run (times set the hour-of-day
features)."""
DEFAULT_LABEL_DELAY_S = 30.0
"""The producers' default: ``backtest FILE`` scores what ``producers replay FILE`` would."""
DEFAULT_BATCH = 1000
DEFAULT_TOP_K = 100
WRITE_CHUNK = 50_000
PROGRESS_EVERY_S = 5.0
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class BacktestError(ValueError):
    """Input the backtest cannot use; the message says why (exit status 2, no traceback)."""


# --- the engine ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """One event as the backtest scored it."""

    event_id: str
    event_time: float
    entity: str
    label: bool | None
    online_score: float
    """The score given before this event's label (or any later one) was learned."""
    decision: Decision
    features: dict[str, float]
    replayed: bool


@dataclass
class Backtest(Generic[E, H]):
    """Prequential scoring of a time-ordered stream of ``(event, label or None)`` pairs.

    ``repeated_ids`` names event ids that occur more than once (their served features are
    kept for the later occurrences); ``forget_entities`` drops each entity's history once
    its batch is scored, for entities synthesized one per row that never come back (it
    keeps memory flat on large files and changes no score).
    """

    spec: KindSpec[E, H]
    model: OnlineModel
    thresholds: Thresholds
    label_delay_s: float = DEFAULT_LABEL_DELAY_S
    batch_size: int = DEFAULT_BATCH
    repeated_ids: frozenset[str] = frozenset()
    forget_entities: bool = False
    histories: dict[str, H] = field(default_factory=dict, init=False)
    """Entity -> history, as the worker's Faust tables hold them."""
    outcomes: dict[str, deque[tuple[float, bool]]] = field(default_factory=dict, init=False)
    """Terminal or sender -> (label arrival, positive), as the worker's Redis sorted sets."""
    learned: int = field(default=0, init=False)
    duplicate_labels: int = field(default=0, init=False)
    _pending: list[tuple[float, int, dict[str, float], str, bool]] = field(
        default_factory=list, init=False
    )
    _seq: int = field(default=0, init=False)
    _served: dict[str, dict[str, float]] = field(default_factory=dict, init=False)
    _labelled: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        if not (self.label_delay_s >= 0 and math.isfinite(self.label_delay_s)):
            raise ValueError("the label delay must be a finite number of seconds, 0 or more")
        if self.batch_size < 1:
            raise ValueError("the batch size must be at least 1")

    def run(self, items: Iterable[tuple[E, bool | None]]) -> Iterator[list[Scored]]:
        """Score ``items`` in order, learning each label once it has arrived; yield each
        scored batch. Labels still waiting at the end are learned by :meth:`finish`."""
        events: list[E] = []
        labels: list[bool | None] = []
        ids: set[str] = set()
        first_due = math.inf
        repeated = self.repeated_ids
        for event, label in items:
            ts = event.timestamp
            if events and (
                first_due <= ts
                or (self._pending and self._pending[0][0] <= ts)
                or len(events) >= self.batch_size
                or (event.event_id in repeated and event.event_id in ids)
            ):
                yield self._score(events, labels)
                events, labels, first_due = [], [], math.inf
                ids.clear()
            if self._pending and self._pending[0][0] <= ts:
                self._learn_until(ts)
            events.append(event)
            labels.append(label)
            if repeated:
                ids.add(event.event_id)
            if label is not None:
                first_due = min(first_due, ts + self.label_delay_s)
        if events:
            yield self._score(events, labels)

    def finish(self) -> None:
        """Learn every label still waiting (the model's final state includes them)."""
        self._learn_until(math.inf)

    def _score(self, events: list[E], labels: list[bool | None]) -> list[Scored]:
        spec, served_store = self.spec, self._served
        served = None
        if served_store:
            served = {
                e.event_id: served_store[e.event_id] for e in events if e.event_id in served_store
            }
        recorded = self.outcomes
        outcomes = {
            e.event_id: count_outcomes(e.timestamp, recorded.get(spec.scope(e), ())) for e in events
        }
        verdicts = score_batch(
            spec,
            events,
            self.histories,
            outcomes,
            self.model,
            self.model.version,
            self.thresholds,
            scored_at=max(e.timestamp for e in events),
            served=served,
        )
        repeated, delay = self.repeated_ids, self.label_delay_s
        out = []
        for event, label, verdict in zip(events, labels, verdicts, strict=True):
            eid, ts, x = event.event_id, event.timestamp, verdict.scored.features
            if label is not None:
                if eid in repeated:
                    if eid in self._labelled:
                        self.duplicate_labels += 1
                        label_to_learn = None
                    else:
                        self._labelled.add(eid)
                        label_to_learn = label
                else:
                    label_to_learn = label
                if label_to_learn is not None:
                    self._seq += 1
                    heapq.heappush(
                        self._pending, (ts + delay, self._seq, x, spec.scope(event), label)
                    )
            if eid in repeated and not verdict.replayed:
                served_store[eid] = x
            scored = verdict.scored
            out.append(
                Scored(
                    event_id=eid,
                    event_time=ts,
                    entity=scored.entity_id,
                    label=label,
                    online_score=scored.online_score,
                    decision=scored.decision,
                    features=x,
                    replayed=verdict.replayed,
                )
            )
        if self.forget_entities:
            for event in events:
                self.histories.pop(spec.entity(event), None)
        return out

    def _learn_until(self, now: float) -> None:
        """Learn the labels that arrived by ``now``, in arrival order, as the worker does:
        from the served features, then record the outcome for the terminal or sender and
        drop that scope's outcomes older than the outcome window or beyond the cap."""
        pending, model, outcomes = self._pending, self.model, self.outcomes
        while pending and pending[0][0] <= now:
            arrival, _, x, scope, positive = heapq.heappop(pending)
            model.learn_one(x, positive)
            self.learned += 1
            recorded = outcomes.get(scope)
            if recorded is None:
                recorded = outcomes[scope] = deque()
            recorded.append((arrival, positive))
            lower = arrival - OUTCOME_WINDOW_S
            while recorded and (recorded[0][0] <= lower or len(recorded) > OUTCOME_CAP):
                recorded.popleft()

    @property
    def waiting(self) -> int:
        """Labels scheduled but not learned yet."""
        return len(self._pending)


# --- sources ------------------------------------------------------------------------------


@dataclass
class Source:
    """Where the events come from, and what the output should say about them."""

    kind: EventKind
    items: Iterator[tuple[Any, bool | None]]
    rows: int | None
    description: str
    notes: list[str] = field(default_factory=list)
    synthesized: set[str] = field(default_factory=set)
    references: Iterator[float] | None = None
    """A comparison score per event (the generator's true probability), in event order."""
    reference_name: str = "reference"
    repeated_ids: frozenset[str] = frozenset()


def generated_events(
    kind: EventKind,
    count: int,
    seed: int,
    start: float,
    positive_rate: float | None = None,
    drift_at: float | None = None,
) -> Iterator[tuple[Transaction | Email, bool, float]]:
    """``count`` events of the producers' simulator: (event, is positive, true probability);
    ``drift_at`` (POSIX seconds) starts the simulator's drift scenario.

    The same stream as ``python -m producers transactions|emails --seed SEED
    --simulate-start START --count COUNT`` (default rates), whose ``--truth-out`` holds the
    same true probabilities. Imported here, lazily: only this option needs the producers.
    """
    if kind == "transaction":
        from producers.transactions import TransactionSimulator

        sim: Any = TransactionSimulator(
            seed, 0.005 if positive_rate is None else positive_rate, start, drift_at
        )
    else:
        from producers.emails import EmailSimulator

        sim = EmailSimulator(seed, 0.3 if positive_rate is None else positive_rate, start, drift_at)
    for _, item in zip(range(count), sim, strict=False):
        yield item.event, item.is_positive, item.true_probability


def _generated_source(args: argparse.Namespace) -> Source:
    kind: EventKind = "transaction" if args.generate == "transactions" else "email"
    if args.count is None:
        raise BacktestError("--generate needs --count N")
    seed = 0 if args.seed is None else args.seed
    start = DEFAULT_START if args.start is None else args.start
    stream = generated_events(kind, args.count, seed, start, args.positive_rate)
    truths: deque[float] = deque()

    def items() -> Iterator[tuple[Any, bool | None]]:
        for event, positive, truth in stream:
            truths.append(truth)
            yield event, positive

    def references() -> Iterator[float]:
        while True:
            yield truths.popleft()

    return Source(
        kind=kind,
        items=items(),
        rows=args.count,
        description=f"generated {args.generate} (seed {seed}, {args.count:,} events, "
        f"from {datetime.fromtimestamp(start, UTC).isoformat()})",
        references=references(),
        reference_name="true_probability",
    )


def _file_source(args: argparse.Namespace, settings: Settings) -> Source:
    spec: dict[str, Any] = read_spec_file(args.mapping) if args.mapping else {}
    kind: EventKind = args.kind or spec.get("kind") or "transaction"
    mapping = parse_mapping([f"{k}={v}" for k, v in spec.get("map", {}).items()], kind)
    mapping.update(parse_mapping(args.map, kind))
    extra = _columns(args.extra) if args.extra is not None else spec.get("extra")
    categorical = _columns(args.categorical) if args.categorical else spec.get("categorical")
    if kind == "email" and (extra or categorical):
        raise BacktestError("--extra and --categorical apply to transactions only")
    positive = args.positive if args.positive is not None else spec.get("positive")
    reference = args.reference or spec.get("reference")
    start = args.start
    if start is None and spec.get("start") is not None:
        start = _instant(str(spec["start"]))
    table = load(
        args.file,
        kind,
        mapping,
        extra=extra,
        categorical=categorical,
        positive=None if positive is None else str(positive),
        time_format=args.time_format or spec.get("time_format"),
        start=DEFAULT_START if start is None else start,
        now=DEFAULT_START,
        require_amount=False,
        reference=reference,
        card_key=settings.card_token_key or None,  # tokens as a replay with the key gives them
    )
    frame = table.frame
    if args.count is not None and args.count < frame.height:
        frame = table.frame = frame.head(args.count)
        table.notes.append(f"only the first {args.count:,} events in time order (--count)")
    ids = frame["event_id"]
    repeated = frozenset(ids.filter(ids.is_duplicated()).unique().to_list())
    references = None
    if reference is not None:
        references = iter(frame["_reference"].fill_null(math.nan).to_list())
    extras = f", {len(table.extra)} extra features" if table.extra else ""
    return Source(
        kind=kind,
        items=table.events(),
        rows=frame.height,
        description=f"{args.file} ({frame.height:,} {kind}s{extras})",
        notes=table.notes,
        synthesized=table.synthesized,
        references=references,
        reference_name=reference or "reference",
        repeated_ids=repeated,
    )


def _columns(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def load_model(path: str | None, kind: EventKind, settings: Settings) -> OnlineModel:
    """The starting model: a fresh one (as a worker without a checkpoint starts), or the state
    in ``path``: one model's ``OnlineModel.to_state()`` JSON, or an object mapping kinds (or
    ``state:<kind>``, as in the Redis checkpoint hash) to such states."""
    if path is None:
        return OnlineModel(kind, positive_weight=settings.positive_weight)
    try:
        document = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise BacktestError(f"cannot read --model-state {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise BacktestError(f"--model-state {path} is not JSON: {exc}") from None
    if isinstance(document, dict) and "format" not in document:
        state = document.get(kind, document.get(f"state:{kind}"))
        if state is None:
            raise BacktestError(f"--model-state {path} holds no {kind} model")
        if isinstance(state, str | bytes):
            state = orjson.loads(state)
        document = state
    try:
        return OnlineModel.from_state(document, kind=kind)
    except ValueError as exc:
        raise BacktestError(f"--model-state {path}: {exc}") from None


# --- outputs ------------------------------------------------------------------------------

SCORE_SCHEMA = {
    "event_id": pl.String,
    "event_time": pl.Datetime("us", "UTC"),
    "entity_id": pl.String,
    "label": pl.Boolean,
    "online_score": pl.Float64,
    "batch_score": pl.Float64,
    "hybrid_score": pl.Float64,
    "decision": pl.String,
}


class ScoresWriter:
    """Writes one row per event to CSV or Parquet (by extension), in chunks, so that the
    output of a large file never sits in memory."""

    def __init__(self, path: str, *, reference: str | None, with_features: bool) -> None:
        self.path = Path(path)
        self.parquet = self.path.suffix.lower() in (".parquet", ".pq")
        self.schema: dict[str, Any] = dict(SCORE_SCHEMA)
        self.reference = reference
        if reference is not None:
            self.schema[reference] = pl.Float64
        self.with_features = with_features
        if with_features:
            self.schema["features"] = pl.String
        self._rows: dict[str, list[Any]] = {name: [] for name in self.schema}
        self._csv: IO[bytes] | None = None
        self._pq: Any = None
        self.rows = 0
        try:
            self._file = self.path.open("wb")
        except OSError as exc:
            raise BacktestError(f"cannot write --scores-out {path}: {exc.strerror}") from None

    def add(self, batch: Sequence[Scored], references: Sequence[float] | None) -> None:
        rows = self._rows
        for i, s in enumerate(batch):
            rows["event_id"].append(s.event_id)
            rows["event_time"].append(round(s.event_time * 1e6))
            rows["entity_id"].append(s.entity)
            rows["label"].append(s.label)
            rows["online_score"].append(s.online_score)
            rows["batch_score"].append(None)
            rows["hybrid_score"].append(None)
            rows["decision"].append(s.decision)
            if self.reference is not None and references is not None:
                value = references[i]
                rows[self.reference].append(None if math.isnan(value) else value)
            if self.with_features:
                rows["features"].append(orjson.dumps(s.features).decode())
        if len(rows["event_id"]) >= WRITE_CHUNK:
            self._flush()

    def _flush(self) -> None:
        n = len(self._rows["event_id"])
        if not n:
            return
        times = self._rows.pop("event_time")
        frame = pl.DataFrame(
            {"event_time": pl.Series(times, dtype=pl.Int64), **self._rows},
            schema_overrides={k: v for k, v in self.schema.items() if k != "event_time"},
        ).with_columns(pl.col("event_time").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
        frame = frame.select(list(self.schema))
        if self.parquet:
            import pyarrow.parquet as pq

            table = frame.to_arrow()
            if self._pq is None:
                self._pq = pq.ParquetWriter(self._file, table.schema)
            self._pq.write_table(table)
        else:
            frame.write_csv(self._file, include_header=self.rows == 0)
        self.rows += n
        self._rows = {name: [] for name in self.schema}

    def close(self) -> None:
        self._flush()
        if self._pq is not None:
            self._pq.close()
        elif self.parquet and self.rows == 0:
            pl.DataFrame(schema=self.schema).write_parquet(self._file)
        self._file.close()


class Collector:
    """The columns the metrics need, as compact arrays (2 million events: about 50 MB)."""

    def __init__(self) -> None:
        self.times = array("d")
        self.scores = array("d")
        self.labels = array("b")  # 1, 0, or -1 for no label
        self.entities = array("q")
        self.references = array("d")
        self.decisions: Counter[str] = Counter()
        self._codes: dict[str, int] = {}

    def add(self, batch: Sequence[Scored], references: Sequence[float] | None) -> None:
        codes = self._codes
        for s in batch:
            self.times.append(s.event_time)
            self.scores.append(s.online_score)
            self.labels.append(-1 if s.label is None else int(s.label))
            code = codes.get(s.entity)
            if code is None:
                code = codes[s.entity] = len(codes)
            self.entities.append(code)
            self.decisions[s.decision] += 1
        if references is not None:
            self.references.extend(references)

    @property
    def events(self) -> int:
        return len(self.scores)


class Progress:
    """One line on stderr every few seconds (the producers' style): reads in a terminal and
    in a log file alike."""

    def __init__(self, total: int | None, out: IO[str] | None, every_s: float) -> None:
        self.total = total
        self.out = out
        self.every_s = every_s
        self.started = self._at = time.monotonic()
        self._next = self.started + every_s
        self._done = 0

    def update(self, done: int, learned: int) -> None:
        if self.out is None:
            return
        now = time.monotonic()
        if now < self._next:
            return
        # The rate since the previous line: the features get dearer as histories and label
        # outcomes fill up, so the average since the start would promise too early an end.
        recent = (done - self._done) / max(now - self._at, 1e-9)
        self._next, self._done, self._at = now + self.every_s, done, now
        rate = done / max(now - self.started, 1e-9)
        of = f" / {self.total:,}" if self.total else ""
        eta = ""
        if self.total and recent > 0:
            eta = f", at least {(self.total - done) / recent:,.0f} s left"
        print(
            f"backtest: {done:,}{of} events, {learned:,} labels learned, "
            f"{recent:,.0f} events/s now, {rate:,.0f} on average{eta}",
            file=self.out,
            flush=True,
        )


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0 if sys.platform != "darwin" else kib / 1024.0 / 1024.0


# --- metrics and report -------------------------------------------------------------------


def evaluate(
    data: Collector, *, threshold: float, top_k: int, per_day: bool, reference: str | None
) -> dict[str, Any]:
    """Metrics of the online scores (and of the reference score when there is one) over the
    labelled events."""
    labels = np.frombuffer(data.labels, dtype=np.int8)
    mask = labels >= 0
    y = labels[mask] == 1
    out: dict[str, Any] = {
        "labelled": int(mask.sum()),
        "positives": int(y.sum()),
        "unlabelled": int((~mask).sum()),
    }
    columns = {"online": np.frombuffer(data.scores, dtype=np.float64)}
    if reference is not None and len(data.references) == data.events:
        columns[reference] = np.frombuffer(data.references, dtype=np.float64)
    times = np.frombuffer(data.times, dtype=np.float64)[mask]
    entities = np.frombuffer(data.entities, dtype=np.int64)[mask]
    scores: dict[str, Any] = {}
    for name, values in columns.items():
        s = values[mask]
        known = ~np.isnan(s)
        if not known.any():
            continue
        result = evaluation.summarize(y[known], s[known], threshold)
        if not known.all():
            result["events_without_score"] = int((~known).sum())
        if per_day:
            result["precision_top_k_per_day"] = evaluation.precision_top_k_per_day(
                times[known], entities[known], y[known], s[known], top_k
            )
        scores[name] = result
    out["scores"] = scores
    return out


def write_report(
    directory: str, result: dict[str, Any], data: Collector, reference: str | None
) -> list[Path]:
    """``report.md`` with PR and ROC curves as PNG (``models.plots``)."""
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BacktestError(f"cannot create --report {directory}: {exc.strerror}") from None
    labels = np.frombuffer(data.labels, dtype=np.int8)
    mask = labels >= 0
    y = labels[mask] == 1
    curves = {"online": np.frombuffer(data.scores, dtype=np.float64)[mask]}
    if reference is not None and reference in result["metrics"]["scores"]:
        curves[reference] = np.frombuffer(data.references, dtype=np.float64)[mask]
    written = plots.save_pr_roc(out, y, curves, f"{result['kind']}s")
    md = out / "report.md"
    md.write_text(_markdown(result), encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return [md, *written, out / "metrics.json"]


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _markdown(result: dict[str, Any]) -> str:
    m = result["metrics"]
    lines = [
        f"# Backtest: {result['source']}",
        "",
        f"- {result['events']:,} {result['kind']}s, {m['labelled']:,} labelled, "
        f"{m['positives']:,} positive; labels after {result['label_delay_s']:g} s of event time",
        f"- {result['events_per_second']:,.0f} events/s, "
        f"peak memory {result['peak_rss_mb']:,.0f} MiB",
        f"- online model: {result['model']['learned_at_start']:,} labels learned at start, "
        f"{result['model']['learned_at_end']:,} at the end",
    ]
    compared = result.get("comparison")
    if compared is None:
        lines.append(
            "- batch and hybrid scores: not computed (`--batch-compare` trains the retrain's "
            "batch model and compares them)"
        )
    lines += [f"- note: {note}" for note in result["notes"]]
    lines += [
        "",
        "| score | ROC AUC | average precision | precision | recall | F1 | FPR | top-k/day |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in m["scores"].items():
        t = s["at_threshold"]
        top = s.get("precision_top_k_per_day")
        lines.append(
            f"| {name} | {_fmt(s['roc_auc'])} | {_fmt(s['average_precision'])} | "
            f"{_fmt(t['precision'])} | {_fmt(t['recall'])} | {_fmt(t['f1'])} | "
            f"{_fmt(t['false_positive_rate'])} | {_fmt(top['value']) if top else 'n/a'} |"
        )
    threshold = result["threshold"]
    lines += [
        "",
        f"Threshold metrics flag `score >= {threshold:g}`. Confusion matrix of the online "
        "scores there:",
        "",
    ]
    t = m["scores"]["online"]["at_threshold"] if "online" in m["scores"] else None
    if t:
        lines += [
            "| | flagged | not flagged |",
            "| --- | --- | --- |",
            f"| positive | {t['tp']:,} | {t['fn']:,} |",
            f"| negative | {t['fp']:,} | {t['tn']:,} |",
        ]
    lines += ["", "![precision-recall](pr.png)", "", "![ROC](roc.png)", ""]
    if compared is not None:
        lines += _comparison_markdown(compared)
    return "\n".join(lines)


ENTITY_FIELDS: dict[EventKind, str] = {"transaction": "card_id", "email": "sender"}
"""The event field that names the entity (what ``KindSpec.entity`` reads)."""

COMPARED = (("online", "online (as served)"), ("batch", "batch"), ("hybrid", "hybrid"))


def _comparison_markdown(compared: dict[str, Any]) -> list[str]:
    window = compared["window"]
    lines = [
        "## Online, batch and hybrid on the retrain's test window",
        "",
        f"The nightly retrain's code (`--batch-compare`) trained a batch model on the earlier "
        f"events; all three scores are judged on the test window, {compared['events']:,} events "
        f"({compared['positives']:,} positive) from {window['from']} to {window['until']}. "
        "Precision, recall and F1 at the retrain's review threshold for batch and hybrid, "
        "the worker's for online.",
        "",
        "| score | ROC AUC | average precision | precision | recall | F1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, name in COMPARED:
        s = compared[key]
        t = s["at_threshold"]
        lines.append(
            f"| {name} | {_fmt(s['roc_auc'])} | {_fmt(s['average_precision'])} | "
            f"{_fmt(t['precision'])} | {_fmt(t['recall'])} | {_fmt(t['f1'])} |"
        )
    if compared["report"]:
        lines += ["", f"The retrain's own report: `{compared['report']}`."]
    return [*lines, ""]


def _text_summary(result: dict[str, Any]) -> str:
    m = result["metrics"]
    lines = [
        f"backtest of {result['source']}",
        f"  {result['events']:,} events, {m['labelled']:,} labelled ({m['positives']:,} "
        f"positive), {result['learned']:,} labels learned, "
        f"{result['events_per_second']:,.0f} events/s, peak RSS {result['peak_rss_mb']:,.0f} MiB",
    ]
    for name, s in m["scores"].items():
        t = s["at_threshold"]
        top = s.get("precision_top_k_per_day")
        lines.append(
            f"  {name:>16}: ROC AUC {_fmt(s['roc_auc'])}  AP {_fmt(s['average_precision'])}  "
            f"at >= {t['threshold']:g}: precision {_fmt(t['precision'])} recall "
            f"{_fmt(t['recall'])} F1 {_fmt(t['f1'])} FPR {_fmt(t['false_positive_rate'])}"
            + (f"  top-{top['k']}/day {_fmt(top['value'])}" if top else "")
        )
    compared = result.get("comparison")
    if compared is None:
        lines.append("  batch, hybrid: not computed (--batch-compare compares them)")
        return "\n".join(lines)
    lines.append(
        f"  on the retrain's test window ({compared['events']:,} events, "
        f"{compared['positives']:,} positive, from {compared['window']['from']}):"
    )
    for key, name in COMPARED:
        s = compared[key]
        lines.append(
            f"  {name:>18}: ROC AUC {_fmt(s['roc_auc'])}  AP {_fmt(s['average_precision'])}"
        )
    return "\n".join(lines)


# --- the command --------------------------------------------------------------------------


_instant = arguments.instant
_number = arguments.number
_whole = arguments.whole


class _Parser(argparse.ArgumentParser):
    """Usage errors leave with status 2 and one line, like every other bad input."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m stream backtest",
        description="Score a labelled dataset (or a generated stream) through the live "
        "worker's scoring code, in event-time order: each event is scored before its label "
        "is learned, and labels arrive --label-delay seconds (event time) after their "
        "event. Needs no Kafka or Redis.",
        epilog="examples:\n"
        "  python -m stream backtest fraudTrain.csv --map card_id=cc_num --map amount=amt \\\n"
        "      --map event_time=trans_date_trans_time --map label=is_fraud \\\n"
        "      --map merchant_id=merchant --categorical category --json\n"
        "  python -m stream backtest --generate transactions --count 100000 --seed 1 \\\n"
        "      --label-delay 86400 --report out/\n\n"
        "exit status: 0 done, 1 bad FRAUD_ setting, 2 bad arguments or unusable input.\n"
        "thresholds and the fresh model's positive weight come from FRAUD_* variables\n"
        "(python -m stream --help lists them).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_argument_group("source (a FILE or --generate)")
    source.add_argument("file", nargs="?", help="CSV, TSV or Parquet file of labelled events")
    source.add_argument(
        "--generate",
        choices=("transactions", "emails"),
        help="score the producers' simulated stream instead of a file",
    )
    source.add_argument(
        "--count", type=_whole(1), help="score at most N events (required with --generate)"
    )
    source.add_argument("--seed", type=_whole(0), help="seed of the generated stream (default 0)")
    source.add_argument(
        "--positive-rate",
        type=_number(0.0, high=0.99),
        metavar="SHARE",
        help="share of fraud/spam in the generated stream (default: the producers' 0.005 / 0.3)",
    )
    source.add_argument(
        "--start",
        type=_instant,
        metavar="ISO",
        help="start of a generated stream, and anchor of synthesized or relative times "
        "(default 2025-01-01T00:00:00Z)",
    )
    mapping = parser.add_argument_group("column mapping (files)")
    mapping.add_argument(
        "--kind",
        choices=("transaction", "email"),
        help="what the rows are (default: the mapping file's kind, else transaction)",
    )
    mapping.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="read event FIELD from COLUMN (repeatable); unmapped fields use the column of "
        "the same name, or a default (as python -m producers replay)",
    )
    mapping.add_argument(
        "--mapping",
        metavar="FILE",
        help="TOML or JSON file with kind, map, extra, categorical, positive, time_format, "
        "start, reference; flags win over it",
    )
    mapping.add_argument(
        "--extra",
        metavar="COL,COL|all",
        help="numeric columns used as features as they are (Transaction.extra); default: "
        "every numeric column when the file has no entity or amount column, else none",
    )
    mapping.add_argument(
        "--categorical",
        metavar="COL,COL",
        help="text columns one-hot encoded (20 most frequent values) into Transaction.extra",
    )
    mapping.add_argument(
        "--positive",
        metavar="VALUE",
        help="the positive label value, when the label column holds two other values",
    )
    mapping.add_argument(
        "--time-format", metavar="STRFTIME", help="format of a text time column when not ISO-like"
    )
    mapping.add_argument(
        "--reference",
        metavar="COLUMN",
        help="a score column of the file to report next to the online model's "
        "(e.g. a generator's true probability)",
    )
    run = parser.add_argument_group("scoring")
    run.add_argument(
        "--label-delay",
        type=_number(0.0),
        default=DEFAULT_LABEL_DELAY_S,
        metavar="SECONDS",
        help="event-time seconds from an event to its label (default %(default)g, as the "
        "producers)",
    )
    run.add_argument(
        "--model-state",
        metavar="FILE",
        help="start from this online-model state (JSON of OnlineModel.to_state, or "
        "{kind: state}); default: a fresh model, as a worker without a checkpoint",
    )
    run.add_argument(
        "--model-state-out", metavar="FILE", help="write the final model state (JSON) here"
    )
    run.add_argument(
        "--batch-size",
        type=_whole(1),
        default=DEFAULT_BATCH,
        help="most events scored per step between label arrivals (default %(default)s)",
    )
    run.add_argument(
        "--batch-compare",
        action="store_true",
        help="also train the nightly retrain's batch model on the earlier events and report "
        "batch and hybrid scores next to the online ones on the retrain's test window (its "
        "last 20 %% of labelled events by time)",
    )
    run.add_argument(
        "--batch-budget",
        type=_number(0.0, inclusive=False),
        metavar="SECONDS",
        help="time budget of the batch model's fit (default FRAUD_RETRAIN_BUDGET_S)",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--threshold",
        type=_number(0.0, high=1.0),
        help="operating threshold of the precision/recall metrics (default: the review "
        "threshold, FRAUD_TXN_REVIEW_THRESHOLD / FRAUD_EMAIL_REVIEW_THRESHOLD); decisions "
        "always use the worker's thresholds",
    )
    out.add_argument(
        "--top-k",
        type=_whole(1),
        default=DEFAULT_TOP_K,
        help="k of the card (sender) precision among the top k per day (default %(default)s)",
    )
    out.add_argument(
        "--scores-out",
        metavar="FILE",
        help="one row per event (.csv or .parquet): event_id, event_time, entity_id, label, "
        "online_score, batch_score, hybrid_score (with --batch-compare, for the test window's "
        "events; empty otherwise), decision",
    )
    out.add_argument(
        "--with-features",
        action="store_true",
        help="add the served features (JSON) to --scores-out",
    )
    out.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    out.add_argument("--report", metavar="DIR", help="write report.md, pr.png, roc.png here")
    out.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return the exit status. No error prints a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.file is None) == (args.generate is None):
        parser.error("give a FILE or --generate transactions|emails (one of them)")
    if args.generate and (args.map or args.mapping or args.extra or args.categorical):
        parser.error("--map, --mapping, --extra and --categorical apply to files only")
    if args.with_features and not args.scores_out:
        parser.error("--with-features needs --scores-out")
    if args.batch_budget is not None and not args.batch_compare:
        parser.error("--batch-budget needs --batch-compare")
    try:
        settings = Settings.from_env()
        return run(args, settings)
    except SettingsError as exc:
        print(f"python -m stream backtest: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (BacktestError, TableError, BatchComparisonError) as exc:
        print(f"python -m stream backtest: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run(args: argparse.Namespace, settings: Settings) -> int:
    """The backtest of ``args`` (parsed by :func:`build_parser`)."""
    started = time.perf_counter()
    source = _generated_source(args) if args.generate else _file_source(args, settings)
    for note in source.notes:
        print(f"note: {note}", file=sys.stderr)
    kind = source.kind
    spec = SPECS[kind]
    thresholds = Thresholds.for_kind(kind, settings)
    model = load_model(args.model_state, kind, settings)
    entity_field = ENTITY_FIELDS[kind]
    backtest: Backtest[Any, Any] = Backtest(
        spec=spec,
        model=model,
        thresholds=thresholds,
        label_delay_s=args.label_delay,
        batch_size=args.batch_size,
        repeated_ids=source.repeated_ids,
        forget_entities=entity_field in source.synthesized,
    )
    reference = source.reference_name if source.references is not None else None
    writer = None
    if args.scores_out:
        writer = ScoresWriter(
            args.scores_out, reference=reference, with_features=args.with_features
        )
    comparison = None
    if args.batch_compare:
        budget = settings.retrain_budget_s if args.batch_budget is None else args.batch_budget
        report_dir = Path(args.report) if args.report else None
        comparison = BatchComparison(kind, args.label_delay, report_dir, budget)
    try:
        return _run_and_finish(args, settings, source, backtest, writer, comparison, started)
    finally:
        if comparison is not None:
            comparison.close()


def _run_and_finish(
    args: argparse.Namespace,
    settings: Settings,
    source: Source,
    backtest: Backtest[Any, Any],
    writer: ScoresWriter | None,
    comparison: BatchComparison | None,
    started: float,
) -> int:
    """Score every event of ``source`` (recording them for ``comparison``), then
    :func:`_finish`."""
    data = Collector()
    progress = Progress(source.rows, None if args.quiet else sys.stderr, PROGRESS_EVERY_S)
    loaded = time.perf_counter()
    try:
        items = source.items if comparison is None else comparison.feed(source.items)
        for batch in backtest.run(items):
            refs = None
            if source.references is not None:
                refs = [next(source.references) for _ in batch]
            data.add(batch, refs)
            if writer is not None:
                writer.add(batch, refs)
            if comparison is not None:
                comparison.record(batch)
            progress.update(data.events, backtest.learned)
        backtest.finish()
    finally:
        if writer is not None:
            writer.close()
    scoring_s = time.perf_counter() - loaded
    return _finish(args, settings, source, backtest, data, writer, comparison, started, scoring_s)


def _progress_log(args: argparse.Namespace) -> Callable[[str], None]:
    """Where the comparison's retrain reports its stages: stderr, unless ``--quiet``."""
    if args.quiet:
        return lambda _: None
    return lambda message: print(message, file=sys.stderr, flush=True)


def _finish(
    args: argparse.Namespace,
    settings: Settings,
    source: Source,
    backtest: Backtest[Any, Any],
    data: Collector,
    writer: ScoresWriter | None,
    comparison: BatchComparison | None,
    started: float,
    scoring_s: float,
) -> int:
    """Measure, compare (``--batch-compare``), write and print what :func:`run` scored."""
    kind, model = source.kind, backtest.model
    thresholds = backtest.thresholds
    threshold = thresholds.review if args.threshold is None else args.threshold
    learned_at_start = model.learned - backtest.learned
    entity_field = ENTITY_FIELDS[kind]
    reference = source.reference_name if source.references is not None else None
    if data.events == 0:
        raise BacktestError("no events to score")
    if args.model_state_out:
        try:
            Path(args.model_state_out).write_bytes(orjson.dumps({kind: model.to_state()}))
        except OSError as exc:
            raise BacktestError(f"cannot write --model-state-out: {exc.strerror}") from None
    notes = list(source.notes)
    per_day = not ({entity_field, "event_time"} & source.synthesized)
    if not per_day:
        notes.append("no precision among the top k per day: entities or times are synthesized")
    if backtest.duplicate_labels:
        notes.append(f"{backtest.duplicate_labels:,} labels of repeated event ids counted once")
    metrics = evaluate(
        data, threshold=threshold, top_k=args.top_k, per_day=per_day, reference=reference
    )
    if metrics["labelled"] == 0:
        raise BacktestError("no row has a label: nothing to measure")
    compared = None
    if comparison is not None:
        compared = comparison.run(settings, log=_progress_log(args))
        if writer is not None:
            comparison.fill_scores(writer.path)
    result: dict[str, Any] = {
        "source": source.description,
        "kind": kind,
        "events": data.events,
        "label_delay_s": args.label_delay,
        "threshold": threshold,
        "thresholds": {"review": thresholds.review, "block": thresholds.block},
        "learned": backtest.learned,
        "decisions": {d: data.decisions.get(d, 0) for d in ("allow", "review", "block")},
        "metrics": metrics,
        "batch": compared["batch"] if compared else None,
        "hybrid": compared["hybrid"] if compared else None,
        "comparison": compared,
        "model": {
            "learned_at_start": learned_at_start,
            "learned_at_end": model.learned,
            "hyperparameters": model.hyperparameters(),
        },
        "events_per_second": data.events / scoring_s if scoring_s > 0 else None,
        "scoring_s": round(scoring_s, 3),
        "total_s": round(time.perf_counter() - started, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "notes": notes,
    }
    if args.report:
        written = write_report(args.report, result, data, reference)
        print(f"report: {', '.join(str(p) for p in written)}", file=sys.stderr)
    if writer is not None:
        print(f"scores: {writer.rows:,} rows in {writer.path}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_text_summary(result))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover - python -m stream backtest is the entry point
    sys.exit(main(sys.argv[1:]))


__all__ = [
    "Backtest",
    "BacktestError",
    "Scored",
    "build_parser",
    "evaluate",
    "generated_events",
    "load_model",
    "main",
]
