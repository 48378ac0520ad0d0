"""How many synthetic transactions per second one Python core produces into Kafka.

Not a test: a script that prints figures. It times, on the same seeded stream,

1. generation alone (the simulator: habits, fraud campaigns, true probabilities);
2. generation + msgspec encoding;
3. generation + encoding + ``send`` through a real broker with kafka-python (crc32c), up to
   the final flush: the producer's real throughput;
4. the same with a label per event on the labels topic, as ``python -m producers`` does
   (twice the messages).

Usage::

    python benchmarks/producer.py --bootstrap-servers 127.0.0.1:9092 [--count 300000]

Topics go to a separate namespace (``--namespace``, default ``bench``) so that a running
worker never sees them.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.events import encode
from models.names import Topics
from models.settings import Settings, SettingsError
from producers.labels import LabelQueue
from producers.publisher import (
    KafkaUnavailable,
    Publisher,
    PublishError,
    relax_gc,
)
from producers.transactions import TransactionSimulator

SEED = 42
START = 1_735_689_600.0


def _simulator() -> TransactionSimulator:
    sim = TransactionSimulator(SEED, start=START)
    relax_gc()  # as the CLI does once its simulator is built
    return sim


def generation(count: int) -> float:
    sim = _simulator()
    t0 = time.perf_counter()
    for _ in range(count):
        next(sim)
    return count / (time.perf_counter() - t0)


def encoding(count: int) -> float:
    sim = _simulator()
    t0 = time.perf_counter()
    for _ in range(count):
        encode(next(sim).event)
    return count / (time.perf_counter() - t0)


def sending(count: int, settings: Settings, *, labels: bool) -> tuple[float, int]:
    topics = Topics.for_namespace(settings.namespace)
    sim = _simulator()
    queue = LabelQueue(random.Random(SEED), mean_delay_s=30.0)
    with Publisher.from_settings(settings, client_id="producer-benchmark") as pub:
        pub.ensure_topics([topics.transactions, topics.labels])
        publish, publish_label = pub.publish, pub.publish_label
        topic, label_topic = topics.transactions, topics.labels
        t0 = time.perf_counter()
        for _ in range(count):
            item = next(sim)
            event = item.event
            publish(topic, event)
            if labels:
                ts = event.timestamp
                queue.add(event.event_id, "transaction", item.is_positive, ts)
                for label in queue.due(ts):
                    publish_label(label_topic, label)
        if labels:
            for label in queue.drain():
                publish_label(label_topic, label)
        pub.flush()
        elapsed = time.perf_counter() - t0
        return count / elapsed, pub.sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", help="Kafka (default: FRAUD_KAFKA_BOOTSTRAP)")
    parser.add_argument("--count", type=int, default=300_000, help="events per measurement")
    parser.add_argument("--namespace", default="bench", help="topic namespace (default bench)")
    parser.add_argument("--skip-labels", action="store_true", help="skip measurement 4")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")
    overrides = {"namespace": args.namespace}
    if args.bootstrap_servers:
        overrides["kafka_bootstrap"] = args.bootstrap_servers
    try:
        settings = Settings.from_env(**overrides)
    except SettingsError as exc:
        parser.error(str(exc))

    t0 = time.perf_counter()
    _simulator()
    print(f"population build:                     {time.perf_counter() - t0:6.2f} s")
    print(f"generation only:                      {generation(args.count):>9,.0f} events/s")
    print(f"generation + encode:                  {encoding(args.count):>9,.0f} events/s")
    try:
        rate, sent = sending(args.count, settings, labels=False)
        print(
            f"generation + encode + send (Kafka):   {rate:>9,.0f} events/s "
            f"({sent:,} messages to {settings.kafka_bootstrap})"
        )
        if not args.skip_labels:
            rate, sent = sending(args.count, settings, labels=True)
            print(
                f"... + one label per event:            {rate:>9,.0f} events/s "
                f"({sent:,} messages, {sent / args.count * rate:,.0f} messages/s)"
            )
    except (KafkaUnavailable, PublishError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
