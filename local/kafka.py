"""A single-node Apache Kafka 4.1 broker (KRaft, no ZooKeeper) run straight from the jars
that ``make setup`` resolves with Maven, because this project cannot count on Docker.

One JVM is both controller and broker; every replication factor is 1 so that internal topics
(consumer offsets, transaction state) can be created on a one-node cluster.

``sasl_users`` turns the client listener into SASL_PLAINTEXT with SASL/PLAIN: the broker
accepts exactly those users (and its own inter-broker user), which is how the tests show the
clients authenticate and a wrong password is refused. ``scram=True`` makes those users
SCRAM-SHA-512 credentials instead (created when the storage is formatted; the broker's own
user stays PLAIN), and ``tls`` (a :class:`BrokerTls`) puts the listener behind TLS:
SASL_SSL, or SSL without users.
"""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient

from local._service import (
    REPO_ROOT,
    Service,
    ServiceError,
    ensure_port_free,
    free_ports,
    port_open,
    require_binary,
)

JARS_DIR = REPO_ROOT / ".cache" / "kafka-jars"
LOG4J_CONFIG = Path(__file__).resolve().parent / "log4j2.properties"
JAVA_HINT = "Java 17+ is required: apt-get install -y openjdk-17-jre-headless"
MIN_JAVA = 17
BROKER_USER = "broker"
"""The SASL user the broker itself uses on its listener (inter-broker), and the readiness probe."""
_JAAS_SAFE = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class BrokerTls:
    """PEM texts of the broker's TLS identity: its certificate chain, its unencrypted PKCS#8
    key, and the CA that signed it (which the broker trusts for its own inter-broker link)."""

    certificate_chain: str
    key: str
    ca: str


def _pem_property(pem: str) -> str:
    """A PEM text as one line of a Java properties file (``\\n`` for its line breaks)."""
    return pem.strip().replace("\n", "\\n")


def random_cluster_id() -> str:
    """What ``kafka-storage.sh random-uuid`` prints: 16 random bytes, URL-safe base64 without
    padding. Made here rather than by StorageTool to save one JVM start (~0.5 s)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka avoids ids that look like command-line options
            return cid


class KafkaBroker(Service):
    """A KRaft broker+controller on 127.0.0.1. ``port``/``controller_port`` None pick free
    ports; ``data_dir`` None uses a temporary directory removed by :meth:`stop`."""

    name = "kafka"
    start_timeout_s = 60.0

    def __init__(
        self,
        port: int | None = None,
        controller_port: int | None = None,
        data_dir: Path | str | None = None,
        log_dir: Path | str | None = None,
        *,
        java: str = "java",
        jars_dir: Path | str = JARS_DIR,
        heap: str = "1g",
        sasl_users: Mapping[str, str] | None = None,
        scram: bool = False,
        tls: BrokerTls | None = None,
    ) -> None:
        if port is None or controller_port is None:
            picked = free_ports(2)
            port = picked[0] if port is None else port
            controller_port = picked[1] if controller_port is None else controller_port
        if port == controller_port:
            raise ServiceError(f"Kafka port and controller port must differ (both {port})")
        super().__init__(data_dir, log_dir)
        self.port = port
        self.controller_port = controller_port
        self.java = java
        self.jars_dir = Path(jars_dir)
        self.heap = heap
        self.config_file = self.log_dir / "kafka-server.properties"
        self._java_path = java
        self.sasl_users = dict(sasl_users or {})
        for user, password in self.sasl_users.items():
            if not (_JAAS_SAFE.fullmatch(user) and _JAAS_SAFE.fullmatch(password)):
                raise ServiceError(f"SASL user {user!r}: use letters, digits, '_', '.', '-' only")
        if BROKER_USER in self.sasl_users:
            raise ServiceError(f"SASL user {BROKER_USER!r} is the broker's own")
        if scram and not self.sasl_users:
            raise ServiceError("scram=True needs sasl_users")
        self.scram = scram
        self.tls = tls
        self._broker_password = secrets.token_hex(16)

    @property
    def listener(self) -> str:
        """The client listener's name and security protocol."""
        if self.sasl_users:
            return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"
        return "SSL" if self.tls else "PLAINTEXT"

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate clients must trust (written by :meth:`prepare`), None without TLS."""
        return self.log_dir / "ca.pem" if self.tls else None

    def client_security(self) -> dict[str, Any]:
        """kafka-python settings for the broker's own user (empty without SASL or TLS)."""
        settings: dict[str, Any] = {}
        if self.listener != "PLAINTEXT":
            settings["security_protocol"] = self.listener
        if self.sasl_users:
            settings.update(
                sasl_mechanism="PLAIN",
                sasl_plain_username=BROKER_USER,
                sasl_plain_password=self._broker_password,
            )
        if self.ca_file is not None:
            settings["ssl_cafile"] = str(self.ca_file)
        return settings

    def _sasl_properties(self) -> list[str]:
        if not self.sasl_users:
            return []
        listener = self.listener.lower()
        users = {BROKER_USER: self._broker_password}
        if not self.scram:
            users.update(self.sasl_users)
        accepted = " ".join(f'user_{user}="{password}"' for user, password in users.items())
        lines = [
            f"sasl.enabled.mechanisms=PLAIN{',SCRAM-SHA-512' if self.scram else ''}",
            "sasl.mechanism.inter.broker.protocol=PLAIN",
            f"listener.name.{listener}.plain.sasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{BROKER_USER}" password="{self._broker_password}" {accepted};',
        ]
        if self.scram:
            lines.append(
                f"listener.name.{listener}.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        return lines

    def _tls_properties(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.certificate.chain={_pem_property(self.tls.certificate_chain)}",
            f"ssl.keystore.key={_pem_property(self.tls.key)}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.certificates={_pem_property(self.tls.ca)}",
        ]

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers string clients use."""
        return f"127.0.0.1:{self.port}"

    def server_properties(self) -> str:
        """The broker configuration: single node, everything replicated once, topics
        auto-created with as many partitions as the project's default (4)."""
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"listeners={self.listener}://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners={self.listener}://127.0.0.1:{self.port}",
                f"listener.security.protocol.map={self.listener}:{self.listener},"
                "CONTROLLER:PLAINTEXT",
                f"inter.broker.listener.name={self.listener}",
                *self._sasl_properties(),
                *self._tls_properties(),
                "controller.listener.names=CONTROLLER",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"log.dirs={self.data_dir.resolve()}",
                "num.partitions=4",
                "auto.create.topics.enable=true",
                "default.replication.factor=1",
                "min.insync.replicas=1",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # Small local footprint: fewer threads than the defaults, short retention.
                "num.network.threads=2",
                "num.io.threads=4",
                # The log cleaner looks for closed changelog segments to compact every second
                # (Kafka's default: 15 s), so a worker restarted soon after a segment closed
                # already reads the compacted log (models.topology.changelog_topic_config).
                "log.cleaner.backoff.ms=1000",
                # At most 16 MiB/s of cleaning I/O: unthrottled, compacting a 16 MiB segment
                # took the cores from the worker in a burst, and the event-to-scored p99 at
                # 5,000 events/s was 63-78 ms, against 42-45 with the cleaner off and 43-47
                # with this (docs/benchmarks.md).
                "log.cleaner.io.max.bytes.per.second=16777216",
                "log.retention.hours=24",
                "",
            ]
        )

    def _check_java(self) -> None:
        self._java_path = require_binary(self.java, JAVA_HINT)
        try:
            out = subprocess.run(
                [self._java_path, "-version"], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServiceError(f"`{self.java} -version` failed ({exc}). {JAVA_HINT}") from None
        match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
        if match:
            major = int(match.group(1))
            if major == 1 and match.group(2):  # "1.8.0_392" style
                major = int(match.group(2))
            if major < MIN_JAVA:
                raise ServiceError(f"found Java {major} at {self._java_path}. {JAVA_HINT}")

    def _check_jars(self) -> None:
        if not any(self.jars_dir.glob("kafka_2.13-*.jar")):
            raise ServiceError(
                f"Kafka jars not found in {self.jars_dir}: run `make setup` "
                "(it resolves them with Maven from local/pom.xml)"
            )

    def _classpath(self) -> str:
        return f"{self.jars_dir.resolve()}/*"  # java expands the wildcard itself

    def prepare(self) -> None:
        """Check Java, jars and ports, write server.properties and format the storage once
        (``make up`` reuses its data dir across restarts, with the cluster id it has)."""
        self._check_java()
        self._check_jars()
        ensure_port_free(self.port, "Kafka")
        ensure_port_free(self.controller_port, "the Kafka controller")
        self.config_file.write_text(self.server_properties())
        self.config_file.chmod(0o600)  # it holds the SASL passwords and TLS key, if any
        if self.tls is not None and self.ca_file is not None:
            self.ca_file.write_text(self.tls.ca)
        if (self.data_dir / "meta.properties").exists():
            return  # formatted before; --ignore-formatted would still reject a new cluster id
        # Kafka 4.1: a static quorum (controller.quorum.voters) must be formatted WITHOUT
        # --standalone / --initial-controllers; those are only for dynamic quorums.
        cmd = [
            self._java_path,
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.log.file={self.log_file.resolve()}",
            "-cp",
            self._classpath(),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            random_cluster_id(),
            "-c",
            str(self.config_file),
        ]
        if self.scram:  # SCRAM credentials live in the cluster metadata, from the start
            for user, password in self.sasl_users.items():
                cmd += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise ServiceError("Kafka storage format did not finish within 60 s") from None
        if done.returncode != 0:
            raise ServiceError(
                f"Kafka storage format failed (exit {done.returncode}):\n"
                f"{(done.stdout + done.stderr).strip()}"
            )

    def command(self) -> list[str]:
        """The broker's JVM with the heap and G1 settings Kafka's own start script gives it
        (``KAFKA_HEAP_OPTS``, ``KAFKA_JVM_PERFORMANCE_OPTS``), as the apache/kafka image of
        docker-compose.yml runs it: a heap of ``heap`` (1 GiB) from the start. It used to
        start at 128 MiB and grow to 512 MiB; G1's collectors then took 6.2 of the broker's
        13.8 CPU seconds in a worker benchmark run (its JVM threads, read from /proc), and 0.1
        with the full heap (docs/benchmarks.md)."""
        return [
            self._java_path,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.log.file={self.log_file.resolve()}",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.config_file.resolve()),
        ]

    def ready(self) -> bool:
        """Ready when a kafka-python admin client can list topics: that needs the controller
        quorum, the broker registration and metadata, not just an open port."""
        if not port_open(self.port):
            return False
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                request_timeout_ms=5000,
                bootstrap_timeout_ms=5000,
                client_id="local-readiness",
                **self.client_security(),
            )
        except Exception:  # NoBrokersAvailable and friends: not up yet
            return False
        try:
            admin.list_topics()
            return True
        except Exception:
            return False
        finally:
            admin.close()
