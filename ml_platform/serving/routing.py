"""Which version answers a call: sticky by entity, a fixed share of entities to the canary.

An entity's bucket is ``sha256(model + canonical entity key)`` read as a number in [0, 1); a
bucket below the canary's traffic share goes to the canary. The same entity therefore always
meets the same version while the share holds (its repeated payments are scored consistently),
raising the share only moves more entities to the canary, and every replica of the service
routes alike without sharing any state.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Role = Literal["champion", "canary"]
CHAMPION: Role = "champion"
CANARY: Role = "canary"

_SCALE = float(2**64)


def bucket(model: str, entity_key: str) -> float:
    """Where an entity falls in [0, 1) for a model's traffic split.

    Args:
        model: The model's name.
        entity_key: The entity's canonical JSON (``ml_platform.serving.calls.entity_key``).

    Returns:
        The first 64 bits of ``sha256(model + entity_key)`` divided by 2**64.
    """
    digest = hashlib.sha256((model + entity_key).encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def route(model: str, entity_key: str, canary_share: float) -> Role:
    """The role whose version answers this entity.

    Args:
        model: The model's name.
        entity_key: The entity's canonical JSON.
        canary_share: The canary's traffic share in [0, 1]; 0 when there is no canary.

    Returns:
        ``canary`` when the entity's bucket is below the share, else ``champion``.
    """
    if canary_share <= 0.0:
        return CHAMPION
    return CANARY if bucket(model, entity_key) < canary_share else CHAMPION
