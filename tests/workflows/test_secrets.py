"""The desk's secret key and signed reply tokens."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from workflows.secrets import reply_address, secret_key, ticket_from_token
from workflows.settings import Settings, SettingsError, load_settings


def test_a_key_is_generated_once_readable_by_the_owner_only(tmp_path: Path) -> None:
    settings = load_settings({"LANEDESK_DATA_DIR": str(tmp_path / "var")})
    first = secret_key(settings)
    assert len(first) == 64 and secret_key(settings) == first
    mode = stat.S_IMODE((tmp_path / "var" / "secret_key").stat().st_mode)
    assert mode == 0o600


def test_a_configured_key_must_be_long_enough() -> None:
    with pytest.raises(SettingsError, match="LANEDESK_SECRET_KEY: must be at least 32 characters"):
        load_settings({"LANEDESK_SECRET_KEY": "short"})


def test_tokens_round_trip_and_forgeries_fail(settings: Settings) -> None:
    keyed = dataclasses.replace(settings, secret_key="k" * 40)
    address = reply_address(keyed, "support+old@desk.example", 1042)
    assert address.startswith("support+ld1042-") and address.endswith("@desk.example")
    assert ticket_from_token(keyed, ["someone@else.example", address.upper()]) == 1042
    other_key = dataclasses.replace(settings, secret_key="j" * 40)
    assert ticket_from_token(other_key, [address]) is None  # another desk's key
    assert ticket_from_token(keyed, [address.replace("ld1042", "ld1043")]) is None  # another ticket
