"""``python -m stream alerts-page [--host H] [--port N]``: serve the live alerts page.

Reads the ``FRAUD_*`` settings once (Redis, Kafka, namespace, ``FRAUD_REVIEW_TOKENS``),
checks that Redis and Kafka answer before it listens, and says plainly what is wrong when
they do not. Exit codes: 0 stopped by a signal, 1 a service unreachable, a port taken or a
bad ``FRAUD_`` variable, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from urllib.parse import urlsplit

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from models import arguments, kafka_security
from models.names import RedisKeys, Topics
from models.settings import Settings, SettingsError
from stream.alerts_page.feed import AlertFeed
from stream.alerts_page.reviews import ReviewDesk, Reviewers
from stream.alerts_page.server import build_app

CONNECT_TIMEOUT_S = 15.0
SEND_TIMEOUT_S = 10.0


class StartError(Exception):
    """A service the page needs is not there; the message says which and where."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stream alerts-page",
        description="Serve the live alerts page: alerts appear as the workers raise them; "
        "reviewers holding a token (FRAUD_REVIEW_TOKENS) mark them confirmed or false "
        "positive, which publishes a label the model learns from.",
        epilog="settings (environment):\n" + Settings.describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=arguments.whole(1),
        default=None,
        help="port (default FRAUD_ALERTS_PAGE_PORT, 8080)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"python -m stream alerts-page: {exc}", file=sys.stderr)
        return 1
    if args.port is not None and args.port > 65535:
        build_parser().error(f"argument --port: must be at most 65535, got {args.port}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(serve(settings, args.host, args.port or settings.alerts_page_port))
    except StartError as exc:
        print(f"python -m stream alerts-page: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _where(redis_url: str) -> str:
    """The Redis URL without its user and password, for messages."""
    parts = urlsplit(redis_url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


async def serve(settings: Settings, host: str, port: int) -> None:
    """Start Redis, Kafka and the server; run until SIGINT or SIGTERM; close all three."""
    keys = RedisKeys(settings.namespace)
    labels_topic = Topics.for_namespace(settings.namespace).labels
    redis = Redis.from_url(settings.redis_url)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        request_timeout_ms=10_000,
        **kafka_security.aiokafka_config(settings),
    )
    runner: web.AppRunner | None = None
    follower: asyncio.Task[None] | None = None
    try:
        try:
            await asyncio.wait_for(redis.ping(), CONNECT_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StartError(f"cannot reach Redis at {_where(settings.redis_url)}: {exc}") from None
        try:
            await asyncio.wait_for(producer.start(), CONNECT_TIMEOUT_S)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise StartError(
                await kafka_security.unreachable_message_async(settings, exc)
            ) from None

        async def send_label(key: bytes, value: bytes) -> None:
            await asyncio.wait_for(
                producer.send_and_wait(labels_topic, value=value, key=key), SEND_TIMEOUT_S
            )

        feed = AlertFeed(redis, keys, capacity=settings.alerts_stream_maxlen)
        await feed.load()
        follower = asyncio.create_task(feed.follow(), name="alerts-feed")
        desk = ReviewDesk(
            redis,
            keys,
            send_label,
            keep_s=settings.served_features_ttl_s,
            stream_maxlen=settings.alerts_stream_maxlen,
        )
        reviewers = Reviewers(settings.reviewers())
        runner = web.AppRunner(build_app(feed, desk, reviewers), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise StartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        names = sorted(set(settings.reviewers().values()))
        print(
            f"alerts page on http://{host}:{port}/ ({len(feed)} recent alerts; "
            + (
                f"reviewers: {', '.join(names)})" if names else "read-only: no FRAUD_REVIEW_TOKENS)"
            ),
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if follower is not None:
            follower.cancel()
        if runner is not None:
            await runner.cleanup()
        await producer.stop()
        await redis.aclose()
