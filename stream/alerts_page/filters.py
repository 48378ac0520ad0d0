"""The question a page asks of the alerts: which kinds, decisions, times and review status.

Parsed from the query string of ``GET /api/alerts`` with a clear error for each bad value;
the page sends the same filter whether it lists alerts or applies a live one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from models.events import Alert, Review, parse_instant

Status = Literal["all", "open", "reviewed"]
KINDS = ("transaction", "email")
DECISIONS = ("review", "block")
DEFAULT_LIMIT = 200
MAX_LIMIT = 2000


class FilterError(ValueError):
    """A query parameter the page cannot use; the message names it and what it accepts."""


@dataclass(frozen=True)
class AlertFilter:
    """Alerts of some kinds and decisions, raised (``scored_at``) within ``[since, until)``."""

    kinds: frozenset[str] = frozenset(KINDS)
    decisions: frozenset[str] = frozenset(DECISIONS)
    since: float | None = None
    until: float | None = None
    status: Status = "all"
    limit: int = DEFAULT_LIMIT

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> AlertFilter:
        unknown = set(query) - {"kind", "decision", "since", "until", "status", "limit"}
        if unknown:
            raise FilterError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        since = _instant(query, "since")
        until = _instant(query, "until")
        if since is not None and until is not None and since >= until:
            raise FilterError("since must be before until")
        status = query.get("status") or "all"
        if status not in get_args(Status):
            raise FilterError(f"status must be one of {', '.join(get_args(Status))}")
        return cls(
            kinds=_choices(query, "kind", KINDS),
            decisions=_choices(query, "decision", DECISIONS),
            since=since,
            until=until,
            status=status,  # type: ignore[arg-type]  # checked against Status above
            limit=_limit(query.get("limit")),
        )

    def matches(self, alert: Alert, review: Review | None) -> bool:
        if alert.kind not in self.kinds or alert.decision not in self.decisions:
            return False
        raised = alert.scored_at.timestamp()
        if self.since is not None and raised < self.since:
            return False
        if self.until is not None and raised >= self.until:
            return False
        if self.status == "open":
            return review is None
        if self.status == "reviewed":
            return review is not None
        return True


def _choices(query: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> frozenset[str]:
    """A comma-separated subset of ``allowed``; absent or empty means all of them."""
    raw = query.get(name, "")
    chosen = frozenset(part.strip() for part in raw.split(",") if part.strip())
    if not chosen:
        return frozenset(allowed)
    bad = chosen - set(allowed)
    if bad:
        raise FilterError(
            f"{name} must be one or more of {', '.join(allowed)} (got {', '.join(sorted(bad))})"
        )
    return chosen


def _instant(query: Mapping[str, str], name: str) -> float | None:
    raw = query.get(name, "").strip()
    if not raw:
        return None
    try:
        return parse_instant(raw)
    except ValueError as exc:
        raise FilterError(f"{name}: {exc}") from None


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise FilterError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)
