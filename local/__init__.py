"""Local Kafka and Redis for tests and ``make up``, without Docker.

Development tooling, not part of the installed package: import it from the repository root.
``python -m local --help`` is the command line that ``make up`` / ``make down`` use.
"""

from local._service import REPO_ROOT, RUN_DIR, ServiceError, free_ports
from local.kafka import BrokerTls, KafkaBroker
from local.redis import RedisServer

__all__ = [
    "REPO_ROOT",
    "RUN_DIR",
    "BrokerTls",
    "KafkaBroker",
    "RedisServer",
    "ServiceError",
    "free_ports",
]
