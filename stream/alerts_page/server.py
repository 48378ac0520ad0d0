"""The HTTP side of the alerts page: routes, Server-Sent Events, errors and security headers.

Routes (all JSON except the page itself and the event stream):

* ``GET /``: the page; ``/static/...`` its script and style.
* ``GET /api/alerts?kind=&decision=&since=&until=&status=&limit=``: recent alerts, newest
  first (filters: :mod:`.filters`).
* ``GET /api/alerts/{alert_id}``: one alert with its score, reasons, features and verdict.
* ``POST /api/alerts/{alert_id}/review`` with ``{"verdict": "confirmed"|"false_positive",
  "note": "..."}`` and ``Authorization: Bearer <token>``: mark it (:mod:`.reviews`).
* ``GET /api/whoami``: the reviewer a token names (how the page signs in).
* ``GET /api/status``: whether reviews are on, how many alerts are held (health check).
* ``GET /api/events``: Server-Sent Events, ``alert`` and ``review``, as they happen.

Reading needs no token; marking does. Every error is ``{"error": "..."}`` with a status
that says whose fault it was. Alert text (an email's subject) is written by strangers, so
the page only ever sets it as text, and the Content-Security-Policy allows no inline script.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import msgspec
from aiohttp import web

from models.events import ReviewVerdict
from stream.alerts_page.feed import AlertFeed, Entry
from stream.alerts_page.filters import AlertFilter, FilterError
from stream.alerts_page.reviews import ReviewDesk, Reviewers, ReviewRefused

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
HEARTBEAT_S = 15.0
MAX_BODY_BYTES = 16 * 1024

FEED = web.AppKey("feed", AlertFeed)
DESK = web.AppKey("desk", ReviewDesk)
REVIEWERS = web.AppKey("reviewers", Reviewers)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class ReviewRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of a verdict."""

    verdict: ReviewVerdict
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


def build_app(feed: AlertFeed, desk: ReviewDesk, reviewers: Reviewers) -> web.Application:
    """The page's application over services already started (the CLI and tests own them)."""
    app = web.Application(middlewares=[_errors_as_json], client_max_size=MAX_BODY_BYTES)
    app[FEED] = feed
    app[DESK] = desk
    app[REVIEWERS] = reviewers
    app.on_response_prepare.append(_add_security_headers)
    app.on_shutdown.append(_end_event_streams)
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC_DIR)
    app.router.add_get("/api/alerts", _list_alerts)
    app.router.add_get("/api/alerts/{alert_id}", _one_alert)
    app.router.add_post("/api/alerts/{alert_id}/review", _review)
    app.router.add_get("/api/whoami", _whoami)
    app.router.add_get("/api/status", _status)
    app.router.add_get("/api/events", _events)
    return app


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


@web.middleware
async def _errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except FilterError as exc:
        return _error(400, str(exc))
    except ReviewRefused as exc:
        return _error(exc.status, exc.message)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"request body over {MAX_BODY_BYTES} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception:
        log.exception("alerts page: %s %s failed", request.method, request.path)
        return _error(500, "internal error (logged on the server)")


async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


async def _end_event_streams(app: web.Application) -> None:
    app[FEED].close()


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def _list_alerts(request: web.Request) -> web.Response:
    query = AlertFilter.from_query(request.query)
    feed = request.app[FEED]
    out = []
    for entry in feed.newest_first():
        if query.matches(entry.alert, entry.review):
            out.append(entry.to_json())
            if len(out) == query.limit:
                break
    return _json({"alerts": out, "held": len(feed)})


def _entry_or_404(request: web.Request) -> Entry:
    alert_id = request.match_info["alert_id"]
    entry = request.app[FEED].get(alert_id)
    if entry is None:
        raise web.HTTPNotFound(
            reason=f"no alert {alert_id!r} among the recent alerts this page holds"
        )
    return entry


async def _one_alert(request: web.Request) -> web.Response:
    return _json(_entry_or_404(request).to_json())


async def _review(request: web.Request) -> web.Response:
    reviewer = request.app[REVIEWERS].who(request.headers.get("Authorization"))
    entry = _entry_or_404(request)
    try:
        body = msgspec.json.decode(await request.read(), type=ReviewRequest)
    except msgspec.ValidationError as exc:
        return _error(400, f"bad review: {exc} (verdict is confirmed or false_positive)")
    except msgspec.DecodeError:
        return _error(400, 'bad review: the body must be JSON like {"verdict": "confirmed"}')
    review = await request.app[DESK].record(
        entry.alert, verdict=body.verdict, reviewer=reviewer, note=body.note
    )
    log.info("alerts page: %s marked %s %s", reviewer, entry.alert.alert_id, body.verdict)
    return _json(msgspec.to_builtins(review), status=201)


async def _whoami(request: web.Request) -> web.Response:
    return _json({"reviewer": request.app[REVIEWERS].who(request.headers.get("Authorization"))})


async def _status(request: web.Request) -> web.Response:
    return _json(
        {"reviews_enabled": request.app[REVIEWERS].enabled, "held": len(request.app[FEED])}
    )


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: each new alert and verdict, as ``event: alert|review``."""
    feed = request.app[FEED]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
    )
    queue = feed.subscribe()
    try:
        await response.prepare(request)
        await response.write(b"retry: 1000\n\n")
        while feed.is_subscribed(queue):
            try:
                message = await asyncio.wait_for(queue.get(), timeout=HEARTBEAT_S)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if message is None:  # the server is stopping
                break
            await response.write(message)
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    finally:
        feed.unsubscribe(queue)
    return response
