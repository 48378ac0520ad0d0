"""Our murmur2 must put every key where kafka-python's (and the Java client's) would."""

from __future__ import annotations

import random

from kafka.partitioner.default import murmur2 as kafka_murmur2

from producers.partitioning import KeyRouter, murmur2, partition_of


def test_murmur2_matches_kafka_python_bit_for_bit():
    rng = random.Random(0)
    keys = [b"", b"a", b"ab", b"abc", b"card_000123", b"tx-7-0000000001"]
    keys += [rng.randbytes(rng.randint(0, 300)) for _ in range(3_000)]
    for key in keys:
        assert murmur2(key) == kafka_murmur2(key), key


def test_partition_of_is_the_default_partitioners_choice():
    for key in (b"card_000001", b"news@newsletter.ikea.com", b"tx-3-0000000042"):
        expected = (kafka_murmur2(key) & 0x7FFFFFFF) % 6
        assert partition_of(key, [0, 1, 2, 3, 4, 5]) == expected


def test_the_router_remembers_repeating_keys_and_forgets_past_its_limit():
    router = KeyRouter([3, 1, 0, 2], remember=2)
    raw, partition = router.route("card_1")
    assert raw == b"card_1" and partition == partition_of(b"card_1", [0, 1, 2, 3])
    assert router.route("card_1") is router.route("card_1")
    router.route("card_2")
    router.route("card_3")  # past the limit: starts over, stays correct
    assert router.route("card_1") == (raw, partition)
    assert router.route_once("tx-1") == (b"tx-1", partition_of(b"tx-1", [0, 1, 2, 3]))
