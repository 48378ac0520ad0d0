"""Settings: built from the environment once, and written back for another process."""

from __future__ import annotations

import ssl

import certifi
import faust
import pytest

from models import kafka_security
from models.names import EVENT_KINDS, history_changelog
from models.settings import Settings, SettingsError, masked_url
from models.topology import changelog_topic_config
from stream.app import app as worker_app
from stream.app import broker_credentials, consuming_config


def test_to_env_is_the_inverse_of_from_env():
    settings = Settings(
        namespace="abc",
        partitions=7,
        txn_review_threshold=0.4,
        model_signing_key="s3cret",
        checkpoint_interval_s=0.25,
    )
    assert Settings.from_env(settings.to_env()) == settings


def test_bad_values_name_their_variable():
    with pytest.raises(SettingsError, match="FRAUD_PARTITIONS='many'"):
        Settings.from_env({"FRAUD_PARTITIONS": "many"})
    with pytest.raises(SettingsError, match="FRAUD_NAMESPACE"):
        Settings.from_env({"FRAUD_NAMESPACE": "a b"})


def test_changelog_segments_are_refused_below_kafkas_minimum_and_reach_the_topic_config():
    with pytest.raises(
        SettingsError, match="FRAUD_CHANGELOG_SEGMENT_BYTES must be at least 1048576"
    ):
        Settings.from_env({"FRAUD_CHANGELOG_SEGMENT_BYTES": "65536"})
    with pytest.raises(SettingsError, match="FRAUD_CHANGELOG_SEGMENT_S must be at least 1"):
        Settings.from_env({"FRAUD_CHANGELOG_SEGMENT_S": "0"})
    settings = Settings.from_env(
        {"FRAUD_CHANGELOG_SEGMENT_BYTES": "2097152", "FRAUD_CHANGELOG_SEGMENT_S": "90"}
    )
    assert changelog_topic_config(settings) == {"segment.bytes": "2097152", "segment.ms": "90000"}


def test_the_history_changelogs_are_named_as_models_names_says():
    """Tests, benchmarks and the operations docs name the changelogs with
    ``history_changelog``; Faust names them from the app and its tables."""
    namespace = Settings.from_env().namespace  # stream.app's app is built from it
    made = {table.changelog_topic.get_topic_name() for table in worker_app.tables.values()}
    assert made == {history_changelog(namespace, kind) for kind in EVENT_KINDS}


# -- Kafka security -------------------------------------------------------------------------

SASL = {
    "FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "FRAUD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "FRAUD_KAFKA_SASL_USERNAME": "worker",
    "FRAUD_KAFKA_SASL_PASSWORD": "kafka-s3cret-password",
}


def test_kafka_security_settings_round_trip():
    settings = Settings.from_env({**SASL, "FRAUD_KAFKA_SSL_CAFILE": certifi.where()})
    assert settings.kafka_uses_sasl and settings.kafka_uses_tls
    assert Settings.from_env(settings.to_env()) == settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRAUD_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT, SSL"),
        ({**SASL, "FRAUD_KAFKA_SASL_MECHANISM": "GSSAPI"}, "must be one of PLAIN, SCRAM"),
        (
            {**SASL, "FRAUD_KAFKA_SASL_PASSWORD": ""},
            "SASL_SSL needs FRAUD_KAFKA_SASL_PASSWORD",
        ),
        (
            {"FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            "needs FRAUD_KAFKA_SASL_USERNAME and FRAUD_KAFKA_SASL_PASSWORD",
        ),
        (
            {"FRAUD_KAFKA_SASL_PASSWORD": "kafka-s3cret-password"},
            "FRAUD_KAFKA_SASL_PASSWORD set, but FRAUD_KAFKA_SECURITY_PROTOCOL=PLAINTEXT",
        ),
        (
            {
                "FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                **{k: v for k, v in SASL.items() if k != "FRAUD_KAFKA_SECURITY_PROTOCOL"},
                "FRAUD_KAFKA_SSL_CAFILE": "/etc/hosts",
            },
            "does not use TLS",
        ),
        ({"FRAUD_KAFKA_SECURITY_PROTOCOL": "SSL", "FRAUD_KAFKA_SSL_CAFILE": "/nope"}, "not a file"),
    ],
)
def test_kafka_security_refuses_what_would_not_work_or_silently_send_plaintext(env, message):
    with pytest.raises(SettingsError, match=message) as refused:
        Settings.from_env(env)
    assert "kafka-s3cret-password" not in str(refused.value)


def test_repr_masks_secrets_and_the_redis_password():
    settings = Settings.from_env(
        {
            **SASL,
            "FRAUD_REDIS_URL": "redis://worker:redis-s3cret@redis:6379/0",
            "FRAUD_MODEL_SIGNING_KEY": "signing-s3cret",
            "FRAUD_REVIEW_TOKENS": "alice:review-s3cret-0123456789",
        }
    )
    text = repr(settings)
    for secret in ("kafka-s3cret", "redis-s3cret", "signing-s3cret", "review-s3cret"):
        assert secret not in text
    assert "redis://worker:***@redis:6379/0" in text
    assert "kafka_sasl_username='worker'" in text
    assert masked_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_plaintext_adds_nothing_to_any_kafka_client():
    settings = Settings()
    assert kafka_security.kafka_python_config(settings) == {}
    assert kafka_security.aiokafka_config(settings) == {}
    assert broker_credentials(settings) is None
    assert kafka_security.refused(settings) is None


def test_sasl_over_tls_reaches_kafka_python_aiokafka_and_faust_alike():
    settings = Settings.from_env({**SASL, "FRAUD_KAFKA_SSL_CAFILE": certifi.where()})
    config = kafka_security.kafka_python_config(settings)
    context = config.pop("ssl_context")
    assert config == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "worker",
        "sasl_plain_password": "kafka-s3cret-password",
    }
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0, "the CA file was loaded"
    assert kafka_security.aiokafka_config(settings).keys() == {*config, "ssl_context"}

    credentials = broker_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("worker", "kafka-s3cret-password")
    faust_config = consuming_config(settings)["broker_credentials"]
    assert (faust_config.username, faust_config.mechanism) == ("worker", credentials.mechanism)


def test_tls_without_sasl():
    settings = Settings.from_env({"FRAUD_KAFKA_SECURITY_PROTOCOL": "SSL"})
    config = kafka_security.kafka_python_config(settings)
    assert config["security_protocol"] == "SSL" and "sasl_mechanism" not in config
    assert isinstance(broker_credentials(settings), faust.SSLCredentials)
    plain_sasl = Settings.from_env({**SASL, "FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    assert kafka_security.ssl_context(plain_sasl) is None
    assert broker_credentials(plain_sasl).protocol.value == "SASL_PLAINTEXT"
