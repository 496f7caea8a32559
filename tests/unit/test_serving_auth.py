"""API keys of the prediction service: parsing, loading, matching; no key in any message."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_platform.serving.auth import (
    API_KEYS_ENV,
    API_KEYS_FILE_ENV,
    ApiKeyError,
    load_api_keys,
    parse_api_keys,
    presented_key,
)

KEY_A = "a" * 20 + "-secret-A"
KEY_B = "b" * 20 + "-secret-B"


def test_entries_of_the_variable_and_the_file_are_merged(tmp_path: Path) -> None:
    secret = tmp_path / "keys"
    secret.write_text(f"# mounted from the deployment's secret\n\nbackoffice : {KEY_B}\n")
    keys = load_api_keys({API_KEYS_ENV: f" checkout:{KEY_A} ,", API_KEYS_FILE_ENV: str(secret)})
    assert keys.names == ["checkout", "backoffice"]
    assert keys.caller(KEY_A) == "checkout"
    assert keys.caller(KEY_B) == "backoffice"
    assert keys.caller(KEY_A + "x") is None
    assert keys.caller(None) is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (KEY_A, "expected 'name:key'"),
        (f"check out:{KEY_A}", "caller name 'check out'"),
        ("checkout:short-key", "shorter than 16"),
        (f"checkout:{KEY_A},checkout:{KEY_B}", "given twice"),
        (f"checkout:{KEY_A},backoffice:{KEY_A}", "same key as another caller"),
    ],
)
def test_a_malformed_entry_is_named_without_its_key(entry: str, message: str) -> None:
    with pytest.raises(ApiKeyError, match=message) as raised:
        parse_api_keys(entry.split(","), API_KEYS_ENV)
    assert API_KEYS_ENV in str(raised.value)
    for secret in (KEY_A, KEY_B, "short-key"):
        assert secret not in str(raised.value)


def test_no_key_refuses_to_start_unless_anonymous_calls_are_allowed() -> None:
    with pytest.raises(ApiKeyError, match="--allow-anonymous"):
        load_api_keys({})
    anonymous = load_api_keys({}, allow_anonymous=True)
    assert anonymous.caller(None) == "anonymous"
    assert anonymous.caller("anything at all, there are no keys") == "anonymous"


def test_with_keys_and_anonymous_calls_a_wrong_key_is_still_refused() -> None:
    keys = load_api_keys({API_KEYS_ENV: f"checkout:{KEY_A}"}, allow_anonymous=True)
    assert keys.caller(None) == "anonymous"
    assert keys.caller(KEY_A) == "checkout"
    assert keys.caller(KEY_B) is None


def test_an_unreadable_file_or_a_caller_in_both_places_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ApiKeyError, match="cannot read the keys file"):
        load_api_keys({API_KEYS_FILE_ENV: str(tmp_path / "missing")})
    secret = tmp_path / "keys"
    secret.write_text(f"checkout:{KEY_B}\n")
    with pytest.raises(ApiKeyError, match="both") as raised:
        load_api_keys({API_KEYS_ENV: f"checkout:{KEY_A}", API_KEYS_FILE_ENV: str(secret)})
    assert KEY_A not in str(raised.value) and KEY_B not in str(raised.value)


@pytest.mark.parametrize(
    ("authorization", "api_key", "presented"),
    [
        (f"Bearer {KEY_A}", None, KEY_A),
        (f"bearer   {KEY_A} ", None, KEY_A),
        (None, KEY_B, KEY_B),
        (f"Basic {KEY_A}", KEY_B, KEY_B),
        ("Bearer ", None, None),
        (None, "  ", None),
        (None, None, None),
    ],
)
def test_the_key_comes_from_a_bearer_token_or_the_api_key_header(
    authorization: str | None, api_key: str | None, presented: str | None
) -> None:
    assert presented_key(authorization, api_key) == presented
