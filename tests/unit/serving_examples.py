"""The example project's served model and one valid call of it, shared by the serving tests."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = "fraud_detection"
# One valid call of MODEL: the entity's join keys and every request-time feature.
CALL = {
    "entity": {"customer_id": 7, "merchant_id": 3},
    "features": {
        "amount": 12.5,
        "hour_of_day": 3,
        "is_international": 0,
        "channel": "card",
        "merchant_category": "grocery",
    },
}
