"""Settings: what a command hands to the services it starts reads back as the same."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from unittest import mock

import pytest

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
