"""Sticky routing of entities between the champion and the canary."""

from __future__ import annotations

import hashlib

import pytest

from ml_platform.serving.calls import entity_key
from ml_platform.serving.routing import bucket, route

KEYS = [entity_key({"customer_id": i, "merchant_id": i % 97}) for i in range(10_000)]


def test_the_bucket_is_the_contract_hash_of_model_and_entity() -> None:
    key = entity_key({"merchant_id": 3, "customer_id": 5})
    assert key == '{"customer_id":5,"merchant_id":3}'
    digest = hashlib.sha256(("fraud_detection" + key).encode()).hexdigest()
    assert bucket("fraud_detection", key) == int(digest[:16], 16) / 2**64
    assert 0.0 <= bucket("fraud_detection", key) < 1.0
    assert bucket("churn", key) != bucket("fraud_detection", key)


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5])
def test_a_share_of_the_entities_goes_to_the_canary(share: float) -> None:
    canary = sum(route("fraud_detection", key, share) == "canary" for key in KEYS)
    assert abs(canary / len(KEYS) - share) < 0.02


def test_an_entity_always_meets_the_same_version() -> None:
    first = [route("fraud_detection", key, 0.2) for key in KEYS[:500]]
    again = [route("fraud_detection", key, 0.2) for key in KEYS[:500]]
    assert first == again


def test_raising_the_share_only_moves_entities_to_the_canary() -> None:
    at_10 = {key for key in KEYS if route("fraud_detection", key, 0.1) == "canary"}
    at_30 = {key for key in KEYS if route("fraud_detection", key, 0.3) == "canary"}
    assert at_10 < at_30


@pytest.mark.parametrize(
    ("share", "role"), [(0.0, "champion"), (-1.0, "champion"), (1.0, "canary")]
)
def test_no_canary_and_a_full_canary(share: float, role: str) -> None:
    assert {route("fraud_detection", key, share) for key in KEYS[:1000]} == {role}
