"""One typed settings object, built from the environment at the entry points and passed down.

Library code never reads ``os.environ``: a CLI or the worker module calls
:meth:`Settings.from_env` once and hands the object to whatever needs it. Every
variable is prefixed ``FRAUD_``; ``Settings.describe()`` lists them for ``--help`` texts
and the README.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints
from urllib.parse import urlsplit, urlunsplit

ENV_PREFIX = "FRAUD_"
MIN_TOKEN_CHARS = 16
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
"""``FRAUD_KAFKA_SECURITY_PROTOCOL`` values, as Kafka names them."""
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
"""``FRAUD_KAFKA_SASL_MECHANISM`` values: those kafka-python, aiokafka and Faust all speak."""
KAFKA_MIN_SEGMENT_BYTES = 1024 * 1024
"""Kafka refuses a topic whose ``segment.bytes`` is below this (Kafka 4)."""


class SettingsError(ValueError):
    """An environment variable holds a value the settings cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything a producer, worker or batch job needs to know about its surroundings."""

    namespace: str = field(
        default="fraud",
        metadata={"help": "prefix of every topic, Redis key and consumer group; isolates runs"},
    )
    kafka_bootstrap: str = field(
        default="127.0.0.1:9092", metadata={"help": "Kafka bootstrap servers, host:port[,...]"}
    )
    kafka_security_protocol: str = field(
        default="PLAINTEXT",
        metadata={
            "help": "how clients talk to Kafka: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL "
            "(docs/security.md)"
        },
    )
    kafka_sasl_mechanism: str = field(
        default="PLAIN",
        metadata={
            "help": "SASL mechanism with a SASL_ protocol: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
        },
    )
    kafka_sasl_username: str = field(
        default="", metadata={"help": "Kafka SASL user; required with a SASL_ protocol"}
    )
    kafka_sasl_password: str = field(
        default="",
        metadata={"help": "Kafka SASL password; required with a SASL_ protocol", "secret": True},
    )
    kafka_ssl_cafile: str = field(
        default="",
        metadata={
            "help": "PEM file of the CAs that sign the brokers' certificates (SSL, SASL_SSL); "
            "empty: the system's CAs"
        },
    )
    redis_url: str = field(
        default="redis://127.0.0.1:6379/0",
        metadata={
            "help": "Redis URL (redis://[user:pw@]host:port/db); each part has its own Redis "
            "user (docs/security.md)"
        },
    )
    partitions: int = field(default=4, metadata={"help": "partitions of the event topics"})
    txn_review_threshold: float = field(
        default=0.5,
        metadata={"help": "transaction score at or above which an alert asks for review"},
    )
    txn_block_threshold: float = field(
        default=0.85, metadata={"help": "transaction score at or above which the card is blocked"}
    )
    email_review_threshold: float = field(
        default=0.5,
        metadata={"help": "email score at or above which the message is quarantined for review"},
    )
    email_block_threshold: float = field(
        default=0.85, metadata={"help": "email score at or above which the message is blocked"}
    )
    positive_weight: float = field(
        default=10.0,
        metadata={
            "help": "learning weight of a fraud/spam label relative to a legit one (imbalance)"
        },
    )
    checkpoint_every_labels: int = field(
        default=5000, metadata={"help": "most labels learned between two online-model checkpoints"}
    )
    checkpoint_interval_s: float = field(
        default=1.0,
        metadata={"help": "longest a label waits before it is learned and checkpointed, seconds"},
    )
    served_features_ttl_s: int = field(
        default=30 * 24 * 3600,
        metadata={"help": "how long served features wait in Redis for their label"},
    )
    served_after_label_s: int = field(
        default=3600,
        metadata={
            "help": "how long served features stay in Redis once their label is learned "
            "(a replay of the event after a crash is scored from them), seconds"
        },
    )
    forget_sweep_interval_s: int = field(
        default=600,
        metadata={
            "help": "how often a worker drops from memory the card and sender histories no "
            "event can use any more (idle 8 and 31 days), seconds"
        },
    )
    changelog_segment_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata={
            "help": "segment size of the history tables' changelog topics, bytes (Kafka's "
            "minimum: 1048576): Kafka compacts a changelog to one record per card or sender "
            "in closed segments only, so a restarted worker reads at most this much more "
            "per partition"
        },
    )
    changelog_segment_s: int = field(
        default=3600,
        metadata={
            "help": "longest a changelog segment stays open, seconds: it bounds what a quiet "
            "changelog leaves uncompacted"
        },
    )
    alerts_stream_maxlen: int = field(
        default=10_000, metadata={"help": "length cap of the recent-alerts Redis stream"}
    )
    batch_size: int = field(
        default=2000, metadata={"help": "events the worker scores per step (stream.take)"}
    )
    batch_within_s: float = field(
        default=0.01, metadata={"help": "longest wait to fill a scoring step, seconds"}
    )
    web_port: int = field(default=6066, metadata={"help": "worker web port (/metrics)"})
    model_signing_key: str = field(
        default="",
        metadata={
            "help": "HMAC key for model payloads; required wherever weights are published",
            "secret": True,
        },
    )
    card_token_key: str = field(
        default="",
        metadata={
            "help": "HMAC key that turns card numbers into tokens when a file is replayed "
            f"({MIN_TOKEN_CHARS}+ characters); required to replay a card-number column; the "
            "same key gives the same tokens (docs/security.md)",
            "secret": True,
        },
    )
    lake_dir: str = field(default="lake", metadata={"help": "directory of the Parquet lake"})
    runs_dir: str = field(
        default="runs", metadata={"help": "directory of retrain reports, one folder per run"}
    )
    cost_missed: float = field(
        default=100.0, metadata={"help": "cost of a missed fraud/spam (sets the thresholds)"}
    )
    cost_review: float = field(
        default=5.0, metadata={"help": "cost of an analyst reviewing one alert"}
    )
    cost_false_block: float = field(
        default=50.0, metadata={"help": "cost of blocking a legitimate payment or message"}
    )
    promotion_margin: float = field(
        default=0.005,
        metadata={"help": "average precision a new batch model must gain over production"},
    )
    retrain_budget_s: float = field(
        default=120.0,
        metadata={
            "help": "time budget of fitting, tuning included (the first candidate stops "
            "growing trees when it is spent), seconds"
        },
    )
    retrain_at: str = field(
        default="02:00", metadata={"help": "UTC time of day of the nightly retrain (HH:MM)"}
    )

    alerts_page_port: int = field(default=8080, metadata={"help": "port of the live alerts page"})
    review_tokens: str = field(
        default="",
        metadata={
            "help": "reviewer:token pairs, comma-separated, that may mark alerts on the alerts "
            f"page (tokens of {MIN_TOKEN_CHARS}+ characters); empty: the page is read-only",
            "secret": True,
        },
    )

    def __repr__(self) -> str:
        """Like the dataclass's, but secrets (and the Redis URL's password) masked: settings
        end up in logs and tracebacks."""
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = "***"
            elif f.name == "redis_url":
                value = masked_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    @property
    def kafka_uses_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    @property
    def kafka_uses_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def reviewers(self) -> dict[str, str]:
        """Reviewer name by token, from ``review_tokens`` (validated by :meth:`validate`)."""
        return {token: name for name, _, token in self._review_entries()}

    def _review_entries(self) -> list[tuple[str, str, str]]:
        """(name, ":" or "" when missing, token) of each ``review_tokens`` entry, stripped."""
        entries = (entry.strip() for entry in self.review_tokens.split(","))
        return [
            (name.strip(), colon, token.strip())
            for name, colon, token in (entry.partition(":") for entry in entries if entry)
        ]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``FRAUD_<FIELD>`` variables; explicit ``overrides`` win over the environment."""
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw, hints[f.name])
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def to_env(self) -> dict[str, str]:
        """The ``FRAUD_*`` variables that rebuild these settings in another process (a worker
        started by a test, a benchmark or a script): the inverse of :meth:`from_env`."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    def validate(self) -> None:
        """Reject combinations that cannot work, with a message naming the variable."""
        for kind in ("txn", "email"):
            review = getattr(self, f"{kind}_review_threshold")
            block = getattr(self, f"{kind}_block_threshold")
            if not 0.0 < review <= block <= 1.0:
                raise SettingsError(
                    f"{ENV_PREFIX}{kind.upper()}_REVIEW_THRESHOLD ({review}) must be in (0, 1] and "
                    f"not above {ENV_PREFIX}{kind.upper()}_BLOCK_THRESHOLD ({block})"
                )
        if not self.namespace or not self.namespace.replace("-", "").replace("_", "").isalnum():
            raise SettingsError(f"{ENV_PREFIX}NAMESPACE must be letters, digits, '-' or '_'")
        for name in (
            "partitions",
            "batch_size",
            "checkpoint_every_labels",
            "alerts_stream_maxlen",
            "served_features_ttl_s",
            "served_after_label_s",
            "forget_sweep_interval_s",
            "changelog_segment_s",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be at least 1")

        if self.changelog_segment_bytes < KAFKA_MIN_SEGMENT_BYTES:
            raise SettingsError(
                f"{ENV_PREFIX}CHANGELOG_SEGMENT_BYTES must be at least {KAFKA_MIN_SEGMENT_BYTES} "
                "(Kafka's minimum segment size)"
            )
        for name in ("cost_missed", "cost_review", "cost_false_block", "retrain_budget_s"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be above 0")
        if not 0 <= self.promotion_margin < 1:
            raise SettingsError(f"{ENV_PREFIX}PROMOTION_MARGIN must be in [0, 1)")
        if not is_time_of_day(self.retrain_at):
            raise SettingsError(f"{ENV_PREFIX}RETRAIN_AT must be HH:MM (UTC), e.g. 02:00")
        if self.card_token_key and len(self.card_token_key) < MIN_TOKEN_CHARS:
            # The message never echoes the key: it ends up in logs.
            raise SettingsError(
                f"{ENV_PREFIX}CARD_TOKEN_KEY must have at least {MIN_TOKEN_CHARS} characters "
                "(make one: openssl rand -hex 32)"
            )
        self._validate_review_tokens()
        self._validate_kafka_security()

    def _validate_kafka_security(self) -> None:
        # Never silently plaintext: credentials or a CA file that the protocol would not use
        # are refused, not ignored. Messages name variables, never their secret values.
        protocol = f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL"
        if self.kafka_security_protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise SettingsError(
                f"{protocol}={self.kafka_security_protocol!r} must be one of "
                f"{', '.join(KAFKA_SECURITY_PROTOCOLS)}"
            )
        if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
            raise SettingsError(
                f"{ENV_PREFIX}KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism!r} must be one of "
                f"{', '.join(KAFKA_SASL_MECHANISMS)}"
            )
        credentials = {
            f"{ENV_PREFIX}KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            f"{ENV_PREFIX}KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
        }
        if self.kafka_uses_sasl:
            missing = [name for name, value in credentials.items() if not value]
            if missing:
                raise SettingsError(
                    f"{protocol}={self.kafka_security_protocol} needs {' and '.join(missing)}"
                )
        else:
            given = [name for name, value in credentials.items() if value]
            if given:
                raise SettingsError(
                    f"{' and '.join(given)} set, but {protocol}={self.kafka_security_protocol} "
                    "sends no credentials: use SASL_SSL (or SASL_PLAINTEXT)"
                )
        if self.kafka_ssl_cafile:
            cafile = f"{ENV_PREFIX}KAFKA_SSL_CAFILE"
            if not self.kafka_uses_tls:
                raise SettingsError(
                    f"{cafile} set, but {protocol}={self.kafka_security_protocol} does not use "
                    "TLS: use SSL or SASL_SSL"
                )
            if not os.path.isfile(self.kafka_ssl_cafile):
                raise SettingsError(f"{cafile}={self.kafka_ssl_cafile!r} is not a file")

    def _validate_review_tokens(self) -> None:
        # Messages never echo a token: they end up in logs.
        names: set[str] = set()
        tokens: set[str] = set()
        for n, (name, colon, token) in enumerate(self._review_entries(), 1):
            where = f"{ENV_PREFIX}REVIEW_TOKENS entry {n}"
            if not colon or not name:
                raise SettingsError(f"{where} must be reviewer:token, e.g. alice:<random token>")
            if len(token) < MIN_TOKEN_CHARS:
                raise SettingsError(
                    f"{where} ({name}): the token must have at least {MIN_TOKEN_CHARS} characters "
                    "(make one: python -c 'import secrets; print(secrets.token_urlsafe())')"
                )
            if name in names or token in tokens:
                raise SettingsError(f"{where} ({name}): reviewer names and tokens must be unique")
            names.add(name)
            tokens.add(token)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated."""
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    @classmethod
    def describe(cls) -> str:
        """One line per variable: name, default, meaning (for --help and the README)."""
        lines = []
        for f in fields(cls):
            default = "(empty)" if f.default == "" else f.default
            lines.append(f"  {ENV_PREFIX}{f.name.upper():28} {default!s:28} {f.metadata['help']}")
        return "\n".join(lines)


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def is_time_of_day(text: str) -> bool:
    """``text`` is HH:MM on the 24-hour clock (``02:00``, ``23:59``)."""
    hours, _, minutes = text.partition(":")
    return (
        len(hours) == 2
        and len(minutes) == 2
        and hours.isdigit()
        and minutes.isdigit()
        and int(hours) < 24
        and int(minutes) < 60
    )


def _parse(name: str, raw: str, kind: Any) -> Any:
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return raw
    except ValueError:
        raise SettingsError(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {getattr(kind, '__name__', kind)}"
        ) from None
