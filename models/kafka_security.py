"""How every Kafka client of the project authenticates and encrypts: one translation of the
``FRAUD_KAFKA_SECURITY_PROTOCOL`` / ``_SASL_*`` / ``_SSL_CAFILE`` settings per client library.

kafka-python (producers, the lake sink, topic creation, model announcements) takes
:func:`kafka_python_config`, aiokafka (the alerts page, the workers' model-updates consumer)
takes :func:`aiokafka_config`, and Faust (the workers' own consumer, producer and topic
creation) takes ``stream.app.broker_credentials``, built from the same :func:`ssl_context`.
With the default ``PLAINTEXT`` every function returns nothing to add, so a client is built
exactly as it was before these settings existed.

TLS always verifies the broker's certificate and host name (``ssl.create_default_context``);
there is no setting that turns verification off.
"""

from __future__ import annotations

import asyncio
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from models.settings import ENV_PREFIX, Settings

__all__ = [
    "aiokafka_config",
    "kafka_python_config",
    "refused",
    "refused_async",
    "ssl_context",
    "unreachable_message",
    "unreachable_message_async",
]


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the SSL and SASL_SSL protocols (None otherwise): the broker's
    certificate must chain to ``kafka_ssl_cafile`` (or the system's CAs) and name its host."""
    if not settings.kafka_uses_tls:
        return None
    return ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)


def _sasl(settings: Settings) -> dict[str, Any]:
    if not settings.kafka_uses_sasl:
        return {}
    return {
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_sasl_username,
        "sasl_plain_password": settings.kafka_sasl_password,
    }


def kafka_python_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's ``KafkaProducer`` / ``KafkaConsumer`` /
    ``KafkaAdminClient``; empty for PLAINTEXT."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return {}
    config: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        config["ssl_context"] = context
    config.update(_sasl(settings))
    return config


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's ``AIOKafkaProducer`` / ``AIOKafkaConsumer``; empty for
    PLAINTEXT. (aiokafka spells everything like kafka-python, and needs the TLS context as
    an object, which kafka-python accepts too.)"""
    return kafka_python_config(settings)


async def refused_async(settings: Settings, timeout_s: float = 5.0) -> str | None:
    """What to tell the user when the broker cannot be talked to with these settings for a
    reason retrying cannot fix: it refuses the SASL credentials, or its TLS certificate
    does not verify. None otherwise (PLAINTEXT, all accepted, or no broker answered: that is
    a different problem).

    The clients themselves only report "unable to bootstrap" after their timeout in both
    cases, and log the reason; this opens one connection per bootstrap server with aiokafka,
    which raises the refusal or the failed verification, to say so at once and plainly."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    from aiokafka.conn import create_conn
    from aiokafka.errors import AuthenticationFailedError, SaslAuthenticationFailed

    for server in settings.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host.strip("[]"),
                    int(port),
                    client_id="fraudstream-credentials-check",
                    request_timeout_ms=int(timeout_s * 1000),
                    **aiokafka_config(settings),
                ),
                timeout_s,
            )
        except (SaslAuthenticationFailed, AuthenticationFailedError) as exc:
            return _credentials_refused(settings, str(exc))
        except ssl.SSLCertVerificationError as exc:
            return _certificate_refused(settings, exc.verify_message or str(exc))
        except Exception:  # unreachable, not a Kafka listener: try the next one
            continue
        conn.close()
        return None
    return None


def refused(settings: Settings, timeout_s: float = 5.0) -> str | None:
    """:func:`refused_async` for synchronous callers (run on its own thread and loop, so it
    works whether or not the caller's thread runs an event loop)."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    with ThreadPoolExecutor(1, thread_name_prefix="kafka-credentials") as pool:
        return pool.submit(asyncio.run, refused_async(settings, timeout_s)).result()


def _credentials_refused(settings: Settings, reason: str) -> str:
    """Names the variables to check, never their values."""
    return (
        f"Kafka at {settings.kafka_bootstrap} refused the credentials of SASL user "
        f"{settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism} over "
        f"{settings.kafka_security_protocol}): {reason}. Check {ENV_PREFIX}KAFKA_SASL_USERNAME "
        f"and {ENV_PREFIX}KAFKA_SASL_PASSWORD"
    )


def _certificate_refused(settings: Settings, reason: str) -> str:
    trusted = settings.kafka_ssl_cafile or "the system's CAs"
    return (
        f"the TLS certificate of Kafka at {settings.kafka_bootstrap} does not verify against "
        f"{trusted} ({reason}). Set {ENV_PREFIX}KAFKA_SSL_CAFILE to the PEM file of the CA "
        "that signed the brokers' certificates"
    )


def unreachable_message(settings: Settings, exc: BaseException, hint: str = "") -> str:
    """The message for a client that could not connect: the refusal of its credentials or
    of the broker's certificate when that is the cause (asked of the broker), else "cannot
    reach" with ``exc`` and ``hint``."""
    return refused(settings) or _cannot_reach(settings, exc, hint)


async def unreachable_message_async(settings: Settings, exc: BaseException, hint: str = "") -> str:
    """:func:`unreachable_message` for code running in an event loop."""
    return await refused_async(settings) or _cannot_reach(settings, exc, hint)


def _cannot_reach(settings: Settings, exc: BaseException, hint: str) -> str:
    text = str(exc) or type(exc).__name__
    protocol = settings.kafka_security_protocol
    over = "" if protocol == "PLAINTEXT" else f" over {protocol}"
    return f"cannot reach Kafka at {settings.kafka_bootstrap}{over} ({text}){hint}"
