"""Who may give a verdict, recording it exactly once, and teaching it as a label.

A verdict is published as a :class:`~models.events.Label` (``source="analyst"``, with the
reviewer's name and the time) on the labels topic: the workers learn from it like any other
late label, and the lake sink keeps it for the nightly retrain.

Recording is claim, send, confirm:

1. a short-lived claim (``SET NX`` with a 30 s expiry) stops two analysts, or a double
   click, from publishing two labels for one alert;
2. the label is sent and the broker's acknowledgement awaited;
3. the verdict overwrites the claim with the long expiry and goes on the reviews stream,
   which every page server follows.

If the send fails the claim is removed and the analyst is told to retry. If the server dies
between 2 and 3, the claim expires and the alert can be reviewed again: a second label for
the same event is then possible, and the workers count only the first (labels count once).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.asyncio import Redis

from models.events import Alert, Review, ReviewVerdict, decode, encode, utc_from_timestamp
from models.names import RedisKeys

CLAIM_TTL_S = 30
PENDING = b"pending:"

SendLabel = Callable[[bytes, bytes], Awaitable[None]]
"""Sends (key, value) to the labels topic and returns once the broker has acknowledged it."""


class ReviewRefused(Exception):
    """A verdict that cannot be taken; ``status`` is the HTTP status the page gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Reviewers:
    """Reviewer names by token. Tokens are compared in constant time, all of them, so the
    response time says nothing about how close a guess was."""

    def __init__(self, by_token: Mapping[str, str]) -> None:
        self._by_token = dict(by_token)

    @property
    def enabled(self) -> bool:
        return bool(self._by_token)

    def who(self, authorization: str | None) -> str:
        """The reviewer an ``Authorization: Bearer <token>`` header names, or ReviewRefused."""
        if not self._by_token:
            raise ReviewRefused(
                403, "reviews are turned off here: FRAUD_REVIEW_TOKENS is empty (read-only page)"
            )
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ReviewRefused(401, "sign in with a reviewer token to mark alerts")
        found = None
        for known, name in self._by_token.items():
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                found = name
        if found is None:
            raise ReviewRefused(401, "unknown reviewer token")
        return found


class ReviewDesk:
    """Takes verdicts: records each once and publishes it as a label."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        send_label: SendLabel,
        *,
        keep_s: int,
        stream_maxlen: int,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._send_label = send_label
        self._keep_s = keep_s
        self._stream_maxlen = stream_maxlen

    async def record(
        self,
        alert: Alert,
        *,
        verdict: ReviewVerdict,
        reviewer: str,
        note: str = "",
        now: float | None = None,
    ) -> Review:
        review = Review(
            alert_id=alert.alert_id,
            event_id=alert.event_id,
            kind=alert.kind,
            verdict=verdict,
            reviewer=reviewer,
            reviewed_at=utc_from_timestamp(time.time() if now is None else now),
            note=note,
        )
        key = self._keys.review(alert.alert_id)
        claimed = await self._redis.set(key, PENDING + reviewer.encode(), nx=True, ex=CLAIM_TTL_S)
        if not claimed:
            raise await self._already(key)
        label = review.as_label()
        try:
            await self._send_label(label.event_id.encode(), encode(label))
        except Exception as exc:
            await self._redis.delete(key)
            raise ReviewRefused(
                503, f"the label could not be published ({type(exc).__name__}); try again"
            ) from exc
        payload = encode(review)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(key, payload, ex=self._keep_s)
            pipe.xadd(
                self._keys.reviews_stream,
                {"review": payload},
                maxlen=self._stream_maxlen,
                approximate=True,
            )
            await pipe.execute()
        return review

    async def _already(self, key: str) -> ReviewRefused:
        raw: Any = await self._redis.get(key) or b""
        if not raw:  # the claim expired in between: rare, and a retry will do
            return ReviewRefused(409, "this alert was being marked; try again")
        if raw.startswith(PENDING):
            who = raw[len(PENDING) :].decode(errors="replace")
            return ReviewRefused(409, f"{who} is marking this alert right now")
        done = decode(raw, Review)
        return ReviewRefused(
            409,
            f"already marked {done.verdict.replace('_', ' ')} by {done.reviewer} "
            f"at {done.reviewed_at.isoformat(timespec='seconds')}",
        )
