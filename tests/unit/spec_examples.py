"""Spec documents shared by the spec tests."""

from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "fraud_detection"
# The smallest valid model spec on the example's feature repository.
MINIMAL_MODEL = {
    "kind": "model",
    "name": "churn",
    "owner": "ds@example.com",
    "task": "binary_classification",
    "features": {"views": ["customer_activity"]},
    "label": {"source": "transactions", "column": "is_fraud"},
}
