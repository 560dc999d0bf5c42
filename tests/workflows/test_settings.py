from __future__ import annotations

from pathlib import Path

import pytest

from workflows.settings import SettingsError, load_settings


def test_it_works_with_no_configuration_at_all() -> None:
    settings = load_settings({})
    assert settings.database_url == "sqlite:///var/lanedesk.db"
    assert settings.ticket_prefix == "LD"
    assert settings.timezone == "UTC"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LANEDESK_DATABASE_URL", "lanedesk.db"),
        ("LANEDESK_TICKET_PREFIX", "ld-"),
        ("LANEDESK_TIMEZONE", "Mars/Olympus"),
        ("LANEDESK_MAX_UPLOAD_BYTES", "lots"),
        ("LANEDESK_LANE_GROUPS", "Tier 1"),
        ("LANEDESK_MAIL_DOMAIN", "bad domain"),
        ("LANEDESK_SQL_ECHO", "maybe"),
    ],
)
def test_a_bad_value_fails_with_the_variables_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_secrets_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "db_url"
    secret.write_text("postgresql+psycopg://desk:s3cret@db/desk\n")
    settings = load_settings({"LANEDESK_DATABASE_URL_FILE": str(secret)})
    assert settings.database_url == "postgresql+psycopg://desk:s3cret@db/desk"


def test_an_unreadable_secret_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="LANEDESK_DATABASE_URL_FILE"):
        load_settings({"LANEDESK_DATABASE_URL_FILE": str(tmp_path / "missing")})


def test_lane_group_overrides_are_parsed() -> None:
    settings = load_settings({"LANEDESK_LANE_GROUPS": "First line=tier-1, Experts = tier-3"})
    assert settings.lane_groups == {"First line": "tier-1", "Experts": "tier-3"}


def test_an_empty_secret_file_is_an_error_not_a_silent_default(tmp_path: Path) -> None:
    secret = tmp_path / "db_url"
    secret.write_text("\n")
    with pytest.raises(SettingsError, match=r"LANEDESK_DATABASE_URL_FILE: .* is empty"):
        load_settings({"LANEDESK_DATABASE_URL_FILE": str(secret)})
