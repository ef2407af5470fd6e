"""Settings: what a command hands to the services it starts reads back as the same."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from unittest import mock

import pytest

from foundation.kafka_security import KafkaSecurity
from foundation.settings import Settings, SettingsError


def test_to_env_reads_back_as_the_same_settings() -> None:
    with mock.patch.dict(os.environ, {}, clear=True):
        defaults = Settings.from_env()
    changed = dataclasses.replace(
        defaults,
        thresholds_file=Path("/etc/tianyan/thresholds.toml"),
        rescue_webhook_urls=("https://96333.example/hook", "https://backup.example/hook"),
        rescue_webhook_secret="whsec_c2VjcmV0 whsec_b2xk,whsec_bmV3",
        rescue_api_token="token",
        rescue_action_secret="whsec_YWN0aW9u",
        rescue_allow_http=True,
        rescue_api_bind="0.0.0.0",
        rescue_api_port=7068,
        rescue_api_rate_per_minute=30,
        dispatcher_web_bind="10.0.0.5",
        checkpoint_interval_s=1.5,
        webhook_timeout_s=2.25,
        detectors_enabled=False,
        escalation_after_s=(10, 20, 30),
        raw_topic="city.raw",
        kafka_replication_factor=3,
        kafka_security=KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_username="worker",
            sasl_password="s3cret",
            ssl_cafile="/etc/tianyan/ca.pem",
            ssl_certfile="/etc/tianyan/worker.pem",
            ssl_keyfile="/etc/tianyan/worker.key",
            ssl_check_hostname=False,
        ),
    )
    for settings in (defaults, changed):
        with mock.patch.dict(os.environ, settings.to_env(), clear=True):
            assert Settings.from_env() == settings


def test_a_bad_value_is_named() -> None:
    with (
        mock.patch.dict(os.environ, {"TIANYAN_ESCALATION_AFTER_S": "30,20,10"}, clear=True),
        pytest.raises(SettingsError, match="TIANYAN_ESCALATION_AFTER_S"),
    ):
        Settings.from_env()


def test_a_replication_factor_below_one_is_named() -> None:
    with (
        mock.patch.dict(os.environ, {"TIANYAN_KAFKA_REPLICATION_FACTOR": "0"}, clear=True),
        pytest.raises(
            SettingsError, match="TIANYAN_KAFKA_REPLICATION_FACTOR=0: must be at least 1"
        ),
    ):
        Settings.from_env()


def test_kafka_security_that_cannot_work_is_named() -> None:
    with (
        mock.patch.dict(os.environ, {"TIANYAN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, clear=True),
        pytest.raises(SettingsError, match="TIANYAN_KAFKA_SASL_USERNAME"),
    ):
        Settings.from_env()
