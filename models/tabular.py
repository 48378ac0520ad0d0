"""Labelled tables (CSV or Parquet) as events: the one column mapping replay and backtest share.

Public fraud and spam datasets name their columns as they please (``cc_num``, ``amt``,
``is_fraud``; ``text``, ``label``), so reading one takes a column mapping
(``--map amount=amt``); a field that is not mapped is read from the column of the same name
when there is one, else filled with a default. ``python -m producers replay`` sends the
events to Kafka and ``python -m stream backtest`` scores them offline: both go through
:func:`load` here, so a dataset becomes the same events either way (and the backtest scores
what the live worker would score). It lives in ``models`` because both the producers and the
stream worker's package stand on ``models`` only.

A file with only numeric columns and a label still works for transactions: ids, cards and
times are synthesized from the row number (and the notes say so), and the numeric columns go
into ``Transaction.extra`` as ready-made features.

Card numbers never leave here in clear: a value of the card or customer column that is 12 to
19 digits once spaces and dashes are removed (:func:`models.events.card_number_digits`; no
Luhn check here, so a mistyped number is covered too) becomes ``card_`` + the first 128 bits
of HMAC-SHA256 over its digits (:func:`card_token`). The key is ``FRAUD_CARD_TOKEN_KEY`` for
the replay, which refuses such a file without one (the same key gives the same tokens in
every run, so card histories carry over); the backtest uses it too when it is set (its
``--scores-out`` then names cards as the live system does), and a random key per run
otherwise, since its tokens then live only in its own outputs. Never an unkeyed hash: once
the issuer's prefix is known a card number has about a billion possible values, tried in
minutes.

``Transaction.extra`` holds numbers only, so a categorical column (``categorical=[...]``)
is one-hot encoded over its :data:`CATEGORICAL_TOP` most frequent values: one ``<col>=<value>``
entry per value, 1.0 for the row's value and 0.0 for the others, every entry on every row
(a feature present only when 1 would have zero variance in the online model's scaler and be
scaled away). Rarer values and empty cells get all zeros. The vocabulary is counted over the
whole file: that looks at the future's category frequencies, never at its labels.

Everything that can be wrong with the file is checked on whole columns (polars) before the
first event is produced, and reported as a :class:`TableError` with a message naming the
column and an offending value: a replay that dies half-way leaves a topic half-filled, and a
backtest that dies after an hour wastes the hour.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import time
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from models.events import (
    Email,
    Transaction,
    card_number_digits,
    mask_card_number,
    utc_from_timestamp,
)
from models.names import EventKind
from models.settings import ENV_PREFIX

TRANSACTION_FIELDS = (
    "event_id",
    "event_time",
    "card_id",
    "customer_id",
    "amount",
    "currency",
    "merchant_id",
    "terminal_id",
    "merchant_category",
    "country",
    "device_id",
    "channel",
    "label",
)
EMAIL_FIELDS = (
    "event_id",
    "event_time",
    "sender",
    "recipient",
    "subject",
    "body",
    "links",
    "has_attachment",
    "label",
)
ENTITY_FIELDS = frozenset(
    {"card_id", "customer_id", "amount", "merchant_id", "terminal_id", "sender"}
)
"""Fields that make a table more than "numeric columns and a label"."""
TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "fraud", "spam", "positive"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "legit", "ham", "genuine", "negative"})
POSIX_MIN = 1e9
"""Numeric times at or above this (2001-09-09) are POSIX seconds; below, offsets."""
CATEGORICAL_TOP = 20
"""Most frequent values of a categorical column that get their own one-hot feature."""

_ID_MAX, _SHORT_MAX = 128, 256
MAX_AMOUNT = 10_000_000.0
SPEC_KEYS = frozenset(
    {"kind", "map", "extra", "categorical", "positive", "time_format", "start", "reference"}
)
CARD_TOKEN_BYTES = 16
"""Bytes of the HMAC kept in a card token: 128 bits, so two cards never share one."""
CARD_KEY_VARIABLE = f"{ENV_PREFIX}CARD_TOKEN_KEY"


class TableError(ValueError):
    """The file cannot be read as events as asked; the message says why and what to do."""


def card_token(number: str, key: str | bytes) -> str:
    """The token of a card number: ``card_`` + the first :data:`CARD_TOKEN_BYTES` bytes of
    HMAC-SHA256(``key``, its digits), in hex. Spaces and dashes do not change it; the same
    number and key always give the same token, another key another one."""
    digits = card_number_digits(number)
    if digits is None:
        raise ValueError("not a card number: 12 to 19 digits (spaces and dashes aside)")
    secret = key.encode() if isinstance(key, str) else key
    if not secret:
        raise ValueError("a card token needs a key")
    mac = hmac.new(secret, digits.encode("ascii"), hashlib.sha256).digest()
    return "card_" + mac[:CARD_TOKEN_BYTES].hex()


@dataclass(frozen=True)
class _CardKey:
    """The key card numbers are tokenized with: given, random for this load, or missing."""

    key: bytes | None
    ephemeral: bool = False

    @classmethod
    def resolve(cls, card_key: str | None, required: bool) -> _CardKey:
        if card_key:
            return cls(card_key.encode())
        if required:
            return cls(None)
        return cls(secrets.token_bytes(32), ephemeral=True)


@dataclass
class Table:
    """A checked, time-sorted dataset ready to stream or score."""

    kind: EventKind
    frame: pl.DataFrame
    """Columns named after the event fields, plus ``_ts`` (POSIX s), ``_label``, the extras
    and, when asked for, ``_reference`` (a score column carried along for comparison)."""
    extra: list[str]
    notes: list[str] = field(default_factory=list)
    """What was synthesized or assumed, to tell the person running the replay or backtest."""
    synthesized: set[str] = field(default_factory=set)
    """Fields made up from row numbers rather than read (``event_time``, ``card_id``, ...)."""

    @property
    def rows(self) -> int:
        return self.frame.height

    def events(self) -> Iterator[tuple[Transaction | Email, bool | None]]:
        """Each event with its label (None for a row without one), in time order.

        Rows become events one at a time: only the columnar frame is held in memory.
        """
        build = self._transaction if self.kind == "transaction" else self._email
        for row in self.frame.iter_rows(named=True):
            yield build(row), row["_label"]

    def _transaction(self, row: dict[str, Any]) -> Transaction:
        extra = {}
        for name in self.extra:
            value = row[name]
            if value is not None and math.isfinite(value):
                extra[name] = float(value)
        return Transaction(
            event_id=row["event_id"],
            event_time=utc_from_timestamp(row["_ts"]),
            card_id=row["card_id"],
            customer_id=row["customer_id"],
            amount=row["amount"],
            currency=row["currency"],
            merchant_id=row["merchant_id"],
            terminal_id=row["terminal_id"],
            merchant_category=row["merchant_category"],
            country=row["country"],
            device_id=row["device_id"],
            channel=row["channel"],
            extra=extra,
        )

    def _email(self, row: dict[str, Any]) -> Email:
        return Email(
            event_id=row["event_id"],
            event_time=utc_from_timestamp(row["_ts"]),
            sender=row["sender"],
            recipient=row["recipient"],
            subject=row["subject"],
            body=row["body"],
            links=row["links"],
            has_attachment=row["has_attachment"],
        )


def parse_mapping(items: list[str], kind: EventKind) -> dict[str, str]:
    """``["amount=amt", ...]`` as ``{"amount": "amt"}``, checking the field names."""
    mapping: dict[str, str] = {}
    for item in items:
        name, sep, column = item.partition("=")
        name, column = name.strip(), column.strip()
        if not sep or not name or not column:
            raise TableError(f"--map {item!r}: expected FIELD=COLUMN, e.g. --map amount=amt")
        _check_field(name, kind, f"--map {item!r}")
        mapping[name] = column
    return mapping


def _check_field(name: str, kind: EventKind, where: str) -> None:
    fields = TRANSACTION_FIELDS if kind == "transaction" else EMAIL_FIELDS
    if name not in fields:
        raise TableError(
            f"{where}: {name!r} is not {'an' if kind == 'email' else 'a'} {kind} "
            f"field; fields: {', '.join(fields)}"
        )


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """A mapping file (TOML, or JSON for a ``.json`` name) as checked options.

    Keys (all optional): ``kind`` ("transaction" / "email"), ``map`` (a table FIELD = COLUMN),
    ``extra`` and ``categorical`` (lists of columns, or ``"all"`` for extra), ``positive``,
    ``time_format``, ``start`` (ISO time), ``reference`` (a score column to compare with).
    Example (TOML)::

        kind = "transaction"
        positive = "fraud"
        extra = ["lat", "long"]
        categorical = ["category"]
        [map]
        card_id = "cc_num"
        amount = "amt"
        label = "is_fraud"
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TableError(f"cannot read mapping file {path}: {exc}") from None
    try:
        spec = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TableError(f"mapping file {path} is not valid: {exc}") from None
    if not isinstance(spec, dict):
        raise TableError(f"mapping file {path} must hold a table/object at the top")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise TableError(
            f"mapping file {path}: unknown keys {unknown}; known: {', '.join(sorted(SPEC_KEYS))}"
        )
    kind = spec.get("kind")
    if kind is not None and kind not in ("transaction", "email"):
        raise TableError(f"mapping file {path}: kind must be 'transaction' or 'email'")
    mapping = spec.get("map", {})
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in mapping.items()
    ):
        raise TableError(f"mapping file {path}: 'map' must map field names to column names")
    for key in ("extra", "categorical"):
        value = spec.get(key)
        if isinstance(value, str):
            spec[key] = [value]
        elif value is not None and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise TableError(f"mapping file {path}: {key!r} must be a list of column names")
    for key in ("positive", "time_format", "start", "reference"):
        if key in spec and not isinstance(spec[key], str | int | float | bool):
            raise TableError(f"mapping file {path}: {key!r} must be a single value")
    return spec


def read_table(path: str | Path) -> pl.DataFrame:
    """A CSV (or TSV) or Parquet file as a DataFrame, with a clear error when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise TableError(f"{path} is empty")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pl.read_parquet(path)
        else:
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            frame = pl.read_csv(path, separator=sep, infer_schema_length=10_000)
    except pl.exceptions.NoDataError:
        raise TableError(f"{path} is empty") from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TableError(f"cannot read {path}: {first}") from None
    if frame.height == 0:
        raise TableError(f"{path} has a header but no rows")
    return frame


def load(
    path: str | Path,
    kind: EventKind,
    mapping: dict[str, str] | None = None,
    *,
    extra: list[str] | None = None,
    categorical: list[str] | None = None,
    positive: str | None = None,
    time_format: str | None = None,
    start: float | None = None,
    now: float | None = None,
    require_amount: bool = True,
    reference: str | None = None,
    card_key: str | None = None,
    card_key_required: bool = False,
) -> Table:
    """Read, map, check and sort a dataset.

    ``extra`` lists numeric columns to carry into ``Transaction.extra`` (``["all"]``: every
    numeric column not otherwise used); ``None`` means "not said": every numeric column when
    the file has nothing but numbers and a label, else none (a note names the unused numeric
    columns). ``categorical`` lists columns to one-hot encode into ``extra`` (see the module
    doc). ``positive`` names the positive label value when the labels are two arbitrary
    values. ``start`` anchors relative or synthesized times (default: so that the data ends
    about ``now``). ``require_amount=False`` lets a transaction table without an amount
    column through, with amount 0 (the replay refuses it: a live stream without amounts is
    a mapping mistake). ``reference`` carries a numeric column along as ``_reference``.

    ``card_key`` keys the tokens of card numbers in the card and customer columns (see the
    module doc). Without one, ``card_key_required`` (the replay) refuses a file that holds
    card numbers with a :class:`TableError` naming ``FRAUD_CARD_TOKEN_KEY``; otherwise (the
    backtest) a random key serves this load only, and a note says so.
    """
    frame = read_table(path)
    mapping = dict(mapping or {})
    fields = TRANSACTION_FIELDS if kind == "transaction" else EMAIL_FIELDS
    columns = frame.columns
    for name, column in mapping.items():
        _check_field(name, kind, f"--map {name}={column}")
        if column not in columns:
            shown = ", ".join(columns[:30]) + (" ..." if len(columns) > 30 else "")
            raise TableError(
                f"--map {name}={column}: no column {column!r} in {path}; columns: {shown}"
            )
    source = {f: mapping.get(f, f if f in columns else None) for f in fields}
    text_missing = source.get("subject") is None and source.get("body") is None
    if kind == "email" and text_missing and "text" in columns:
        source["body"] = "text"  # the usual name of a spam corpus's single text column
    notes: list[str] = []
    synthesized: set[str] = set()
    now = time.time() if now is None else now
    n = frame.height

    if source["label"] is None:
        raise TableError(
            f"{path} has no 'label' column: name the label with --map "
            "label=COLUMN (e.g. --map label=is_fraud)"
        )
    label = _labels(frame[source["label"]], notes, positive)
    ts = _times(frame, source["event_time"], time_format, start, now, notes)
    if source["event_time"] is None:
        synthesized.add("event_time")
    out: dict[str, pl.Series] = {"_ts": ts, "_label": label}
    if reference is not None:
        out["_reference"] = _reference(frame, reference)
    if source["event_id"] is None:
        notes.append("event ids synthesized from row numbers (replay-<row>)")
        synthesized.add("event_id")
        out["event_id"] = pl.Series([f"replay-{i}" for i in range(n)])
    else:
        out["event_id"] = _text(frame[source["event_id"]], "event_id", _ID_MAX, required=True)
        if out["event_id"].n_unique() != n:
            notes.append(
                f"column {source['event_id']!r} has repeated ids: the stream "
                "counts each label once per id"
            )
    used = {c for c in source.values() if c is not None}
    if reference is not None:
        used.add(reference)
    extras: list[str] = []
    if kind == "transaction":
        if extra is None:
            extra = _default_extra(frame, source, used, notes)
        cards = _CardKey.resolve(card_key, card_key_required)
        out.update(_transaction_columns(frame, source, notes, synthesized, require_amount, cards))
        extras = _extras(frame, extra, used | set(categorical or []))
        for name in extras:
            out[name] = frame[name].cast(pl.Float64)
        for name, values in _one_hot(frame, categorical or [], used, notes).items():
            out[name] = values
            extras.append(name)
    else:
        if categorical:
            raise TableError("categorical columns apply to transactions only")
        out.update(_email_columns(frame, source, notes, synthesized))
    table = pl.DataFrame(out).sort("_ts", maintain_order=True)
    return Table(kind=kind, frame=table, extra=extras, notes=notes, synthesized=synthesized)


def _labels(column: pl.Series, notes: list[str], positive: str | None = None) -> pl.Series:
    """The label column as booleans (None where empty); refuses anything not binary."""
    name = column.name
    dtype = column.dtype
    if positive is not None:
        result = _labels_with_positive(column, positive)
    elif dtype == pl.Boolean:
        result = column
    elif dtype.is_numeric():
        values = column.drop_nulls().cast(pl.Float64)
        values = values.filter(values.is_not_nan())
        bad = values.filter(~values.is_in([0.0, 1.0])).unique().sort().head(5).to_list()
        if bad:
            raise TableError(
                f"label column {name!r} is not binary: found {bad} (expected 0/1, true/false; "
                "for two other values say which is positive with --positive VALUE)"
            )
        result = column.cast(pl.Float64).fill_nan(None).cast(pl.Boolean)
    elif dtype == pl.String:
        lowered = column.str.strip_chars().str.to_lowercase()
        known = lowered.is_in(list(TRUE_WORDS | FALSE_WORDS)) | lowered.is_null()
        bad = column.filter(~known).unique().sort().head(5).to_list()
        if bad:
            raise TableError(
                f"label column {name!r} is not binary: found {bad} (expected "
                "0/1, true/false, yes/no, fraud/legit or spam/ham; for two other values "
                "say which is positive with --positive VALUE)"
            )
        result = lowered.is_in(list(TRUE_WORDS))  # null stays null: no label
    else:
        raise TableError(f"label column {name!r} has type {dtype}, not a binary label")
    missing = result.null_count()
    if missing == len(result):
        raise TableError(f"label column {name!r} is empty")
    if missing:
        notes.append(f"{missing} rows have no label: their events are sent without one")
    return result.rename("_label")


def _labels_with_positive(column: pl.Series, positive: str) -> pl.Series:
    """Labels of a column holding two values, ``positive`` naming the positive one."""
    name = column.name
    dtype = column.dtype
    if dtype == pl.String or dtype == pl.Boolean:
        values = column.cast(pl.String).str.strip_chars().str.to_lowercase()
        wanted: Any = str(positive).strip().lower()
    elif dtype.is_numeric():
        values = column.cast(pl.Float64).fill_nan(None)
        try:
            wanted = float(positive)
        except ValueError:
            raise TableError(f"--positive {positive!r}: label column {name!r} is numeric") from None
    else:
        raise TableError(f"label column {name!r} has type {dtype}, not a binary label")
    distinct = values.drop_nulls().unique().sort()
    if len(distinct) > 2:
        raise TableError(
            f"label column {name!r} is not binary: {len(distinct)} distinct values "
            f"(e.g. {distinct.head(5).to_list()})"
        )
    if wanted not in distinct.to_list():
        raise TableError(
            f"--positive {positive!r} is not a value of label column {name!r}: "
            f"found {distinct.to_list()}"
        )
    return values == wanted


def _reference(frame: pl.DataFrame, column: str) -> pl.Series:
    if column not in frame.columns:
        raise TableError(f"reference score column {column!r} is not in the file")
    values = frame[column]
    if not values.dtype.is_numeric():
        raise TableError(f"reference score column {column!r} is not numeric ({values.dtype})")
    return values.cast(pl.Float64).fill_nan(None).rename("_reference")


def _times(
    frame: pl.DataFrame,
    column: str | None,
    time_format: str | None,
    start: float | None,
    now: float,
    notes: list[str],
) -> pl.Series:
    """Event times as POSIX seconds (Float64)."""
    n = frame.height
    if column is None:
        base = start if start is not None else now - n
        notes.append(
            "no event_time column: times synthesized one second apart by row number, "
            f"from {utc_from_timestamp(base).isoformat()}"
        )
        return pl.Series("_ts", [base + i for i in range(n)], dtype=pl.Float64)
    series = frame[column]
    dtype = series.dtype
    if dtype == pl.String:
        hint = "" if time_format else "; give its format with --time-format (strftime)"
        try:
            parsed = series.str.strip_chars().str.to_datetime(
                format=time_format, strict=False, time_unit="us"
            )
        except pl.exceptions.PolarsError:  # no format fits even the first values
            first = series.drop_nulls().head(1).to_list()
            raise TableError(
                f"cannot parse time {first[0] if first else ''!r} in column {column!r}{hint}"
            ) from None
        bad = series.filter(parsed.is_null() & series.is_not_null()).head(1).to_list()
        if bad:
            raise TableError(f"cannot parse time {bad[0]!r} in column {column!r}{hint}")
        series, dtype = parsed, parsed.dtype
    if dtype == pl.Date:
        series, dtype = series.cast(pl.Datetime("us")), pl.Datetime("us")
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            notes.append(f"times in {column!r} carry no zone: read as UTC")
        seconds = series.dt.epoch("us").cast(pl.Float64) / 1e6
    elif dtype.is_numeric():
        seconds = series.cast(pl.Float64)
        top = seconds.max()
        if isinstance(top, (int, float)) and top >= POSIX_MIN * 1000:
            seconds = seconds / 1000.0
            notes.append(f"times in {column!r} read as POSIX milliseconds")
        elif not (isinstance(top, (int, float)) and top >= POSIX_MIN):
            top_s = float(top) if isinstance(top, (int, float)) else 0.0
            base = start if start is not None else now - top_s
            seconds = seconds + base
            notes.append(
                f"times in {column!r} read as seconds from {utc_from_timestamp(base).isoformat()}"
            )
    else:
        raise TableError(f"time column {column!r} has type {dtype}, not a time")
    if seconds.null_count() or seconds.is_nan().any():
        raise TableError(f"time column {column!r} has empty values")
    return seconds.rename("_ts")


def _text(
    column: pl.Series, name: str, limit: int, *, required: bool = False, default: str = ""
) -> pl.Series:
    values = column.cast(pl.String).str.strip_chars().str.slice(0, limit)
    if required and (values.null_count() or (values == "").any()):
        raise TableError(f"column {column.name!r} ({name}) has empty values")
    return values.fill_null(default).rename(name)


def _transaction_columns(
    frame: pl.DataFrame,
    source: dict[str, str | None],
    notes: list[str],
    synthesized: set[str],
    require_amount: bool,
    card_key: _CardKey,
) -> dict[str, pl.Series]:
    n = frame.height
    out: dict[str, pl.Series] = {}
    amount_col = source["amount"]
    if amount_col is None:
        if require_amount:
            raise TableError("no 'amount' column: map one with --map amount=COLUMN")
        notes.append("no amount column: every amount is 0 (the amount features are constant)")
        synthesized.add("amount")
        out["amount"] = pl.Series("amount", [0.0] * n, dtype=pl.Float64)
    else:
        out["amount"] = _amounts(frame[amount_col], amount_col)
    if source["card_id"] is None:
        notes.append("no card_id column: each row gets its own card (card_<row>)")
        synthesized.add("card_id")
        out["card_id"] = pl.Series([f"card_{i}" for i in range(n)])
    else:
        cards = _text(frame[source["card_id"]], "card_id", _ID_MAX, required=True)
        out["card_id"] = _tokenize_card_numbers(cards, source["card_id"], card_key, notes)
    if source["customer_id"] is None:
        out["customer_id"] = out["card_id"].rename("customer_id")
    else:
        customers = _text(frame[source["customer_id"]], "customer_id", _ID_MAX, default="unknown")
        out["customer_id"] = _tokenize_card_numbers(
            customers, source["customer_id"], card_key, notes
        )
    defaults = {
        "currency": "EUR",
        "merchant_id": "merchant_unknown",
        "terminal_id": "",
        "merchant_category": "unknown",
        "country": "ZZ",
        "device_id": "",
        "channel": "pos",
    }
    for name, default in defaults.items():
        col = source[name]
        if col is None:
            out[name] = pl.Series(name, [default] * n)
        else:
            limit = _ID_MAX if name.endswith("_id") else _SHORT_MAX
            out[name] = _text(frame[col], name, limit, default=default)
    if source["terminal_id"] is None:
        out["terminal_id"] = out["merchant_id"].rename("terminal_id")
    out["terminal_id"] = out["terminal_id"].replace("", "terminal_unknown")
    out["merchant_id"] = out["merchant_id"].replace("", "merchant_unknown")
    out["currency"] = out["currency"].str.to_uppercase()
    _check_codes(out["currency"], source["currency"], 3, 3, "a 3-letter currency code")
    out["country"] = out["country"].str.to_uppercase().replace("", "ZZ")
    _check_codes(out["country"], source["country"], 2, 3, "a 2- or 3-letter country code")
    channel = out["channel"].str.to_lowercase()
    bad = channel.filter(~channel.is_in(["pos", "online"])).unique().head(5).to_list()
    if bad:
        raise TableError(
            f"channel column {source['channel']!r} must hold 'pos' or 'online', found {bad}"
        )
    out["channel"] = channel
    return out


def _amounts(amount: pl.Series, amount_col: str) -> pl.Series:
    if not amount.dtype.is_numeric():
        raise TableError(f"amount column {amount_col!r} is not numeric ({amount.dtype})")
    amount = amount.cast(pl.Float64)
    if amount.null_count() or amount.is_nan().any():
        raise TableError(f"amount column {amount_col!r} has empty values")
    if (amount < 0).any():
        raise TableError(
            f"amount column {amount_col!r} has negative values "
            f"(e.g. {amount.filter(amount < 0)[0]}); refunds are not payments"
        )
    if (amount > MAX_AMOUNT).any():
        raise TableError(
            f"amount column {amount_col!r} has values above {MAX_AMOUNT:,.0f}, "
            "which the event schema refuses"
        )
    return amount.rename("amount")


def _tokenize_card_numbers(
    values: pl.Series, column: str, card_key: _CardKey, notes: list[str]
) -> pl.Series:
    """``values`` with each card number (by its digits, no Luhn check) replaced by its token;
    other values pass. Each distinct number is hashed once."""
    numbers = {
        value: digits
        for value in values.drop_nulls().unique().to_list()
        if (digits := card_number_digits(value)) is not None
    }
    if not numbers:
        return values
    if card_key.key is None:
        example = mask_card_number(min(numbers))
        raise TableError(
            f"column {column!r} holds card numbers (e.g. {example}): set {CARD_KEY_VARIABLE} "
            "(a secret of 16+ characters, e.g. from `openssl rand -hex 32`) to send them as "
            "keyed tokens; they are never sent in clear or hashed without a key"
        )
    tokens = {value: card_token(digits, card_key.key) for value, digits in numbers.items()}
    if card_key.ephemeral:
        notes.append(
            f"column {column!r} holds card numbers: turned into tokens keyed with a random "
            "key for this run only (the same card gets the same token within the file)"
        )
    else:
        notes.append(
            f"column {column!r} holds card numbers: sent as keyed tokens "
            f"(card_<HMAC-SHA256>, {CARD_KEY_VARIABLE}), never in clear"
        )
    return values.replace(tokens)


def _check_codes(values: pl.Series, column: str | None, low: int, high: int, what: str) -> None:
    lengths = values.str.len_chars()
    bad = values.filter((lengths < low) | (lengths > high)).unique().head(5).to_list()
    if bad:
        raise TableError(f"column {column!r} must hold {what}, found {bad}")


def _email_columns(
    frame: pl.DataFrame, source: dict[str, str | None], notes: list[str], synthesized: set[str]
) -> dict[str, pl.Series]:
    n = frame.height
    out: dict[str, pl.Series] = {}
    if source["subject"] is None and source["body"] is None:
        raise TableError("no 'subject' or 'body' column: map the text with --map body=COLUMN")
    if source["sender"] is None:
        notes.append("no sender column: each row gets its own sender (row<row>@replay.invalid)")
        synthesized.add("sender")
        out["sender"] = pl.Series([f"row{i}@replay.invalid" for i in range(n)])
    else:
        sender = _text(frame[source["sender"]], "sender", 320, default="unknown@replay.invalid")
        out["sender"] = sender.replace("", "unknown@replay.invalid")
        short = sender.filter(sender.str.len_chars() < 3).head(1).to_list()
        if short:
            raise TableError(
                f"sender column {source['sender']!r} has a value too short to "
                f"be an address: {short[0]!r}"
            )
    for name, limit in (("recipient", 320), ("subject", 1000), ("body", 100_000)):
        col = source[name]
        out[name] = pl.Series(name, [""] * n) if col is None else _text(frame[col], name, limit)
    links_col = source["links"]
    if links_col is None:
        out["links"] = pl.Series("links", [[] for _ in range(n)], dtype=pl.List(pl.String))
    else:
        links = frame[links_col]
        if links.dtype == pl.String:
            links = links.fill_null("").str.extract_all(r"[^\s,;]+")
        elif not isinstance(links.dtype, pl.List):
            raise TableError(f"links column {links_col!r} must hold text or lists of text")
        out["links"] = links.cast(pl.List(pl.String)).list.head(200).fill_null([]).rename("links")
    attach_col = source["has_attachment"]
    if attach_col is None:
        out["has_attachment"] = pl.Series("has_attachment", [False] * n)
    else:
        try:
            attached = _labels(frame[attach_col], [])
        except TableError:
            raise TableError(f"has_attachment column {attach_col!r} must be boolean") from None
        out["has_attachment"] = attached.fill_null(False).rename("has_attachment")
    return out


def _default_extra(
    frame: pl.DataFrame, source: dict[str, str | None], used: set[str], notes: list[str]
) -> list[str]:
    """Extras when none were asked for: all numeric columns of a numbers-and-label file."""
    numeric = [c for c in frame.columns if c not in used and frame[c].dtype.is_numeric()]
    if not numeric:
        return []
    if not any(source[f] is not None for f in ENTITY_FIELDS if f in source):
        notes.append(
            f"no entity or amount columns: the {len(numeric)} numeric columns are the "
            "features (Transaction.extra)"
        )
        return numeric
    shown = ", ".join(numeric[:10]) + (" ..." if len(numeric) > 10 else "")
    notes.append(f"{len(numeric)} numeric columns not used as features ({shown}): add --extra")
    return []


def _extras(frame: pl.DataFrame, names: list[str], used: set[str]) -> list[str]:
    if names in (["all"], ["*"]):
        return [c for c in frame.columns if c not in used and frame[c].dtype.is_numeric()]
    for name in names:
        if name not in frame.columns:
            raise TableError(f"--extra {name}: no such column")
        if not frame[name].dtype.is_numeric():
            raise TableError(
                f"--extra {name}: column is {frame[name].dtype}, not numeric "
                "(one-hot encode it with --categorical instead)"
            )
    return list(dict.fromkeys(names))


def _one_hot(
    frame: pl.DataFrame, names: list[str], used: set[str], notes: list[str]
) -> dict[str, pl.Series]:
    """``<col>=<value>`` 0/1 columns for the most frequent values of each categorical column."""
    out: dict[str, pl.Series] = {}
    for name in dict.fromkeys(names):
        if name not in frame.columns:
            raise TableError(f"--categorical {name}: no such column")
        values = frame[name].cast(pl.String).str.strip_chars()
        counts = (
            values.drop_nulls()
            .value_counts()
            .sort(["count", name], descending=[True, False])
            .head(CATEGORICAL_TOP)
        )
        top = counts[name].to_list()
        distinct = values.drop_nulls().n_unique()
        if distinct > len(top):
            notes.append(
                f"categorical column {name!r}: {len(top)} most frequent of {distinct} values "
                "one-hot encoded; the rest get all zeros"
            )
        for value in top:
            out[f"{name}={value}"] = (values == value).fill_null(False)
    return out


def events_frame(
    events: Iterable[Transaction | Email],
    labels: Iterable[bool | None] | None = None,
    **columns: Iterable[Any],
) -> pl.DataFrame:
    """Events as a table that :func:`load` reads back as the same events: the inverse of the
    mapping, for writing generated or test streams to CSV or Parquet.

    Event times become a UTC ``event_time`` column (microseconds, as events hold them), a
    transaction's extra features become columns of their own (read them back with
    ``extra=[...]`` or ``["all"]``), ``labels`` the ``label`` column; ``columns`` adds more
    (e.g. ``true_probability=[...]``). Card ids that look like card numbers would come back
    as tokens: generated and test cards never do.
    """
    rows: list[dict[str, Any]] = []
    for event in events:
        row = msgspec.to_builtins(event)
        del row["schema_version"]
        row["event_time"] = round(event.timestamp * 1e6)
        if isinstance(event, Transaction):
            row.update(row.pop("extra"))
        rows.append(row)
    if not rows:
        raise TableError("no events to write")
    frame = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.col("event_time").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    )
    if "links" in frame.columns:
        frame = frame.with_columns(pl.col("links").cast(pl.List(pl.String)))
    if labels is not None:
        frame = frame.with_columns(pl.Series("label", list(labels), dtype=pl.Boolean))
    for name, values in columns.items():
        frame = frame.with_columns(pl.Series(name, list(values)))
    return frame
