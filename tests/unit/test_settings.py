"""Settings: built from the environment once, and written back for another process."""

from __future__ import annotations

import pytest

from models.settings import Settings, SettingsError


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
