"""The prediction API's models, built from a model's spec: what /openapi.json shows."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from ml_platform.serving.metrics import ServingMetrics
from ml_platform.serving.schema import api_models, class_prefix
from ml_platform.spec.catalog import Catalog
from ml_platform.spec.loading import load_project
from tests.unit.serving_examples import CALL, MODEL, PROJECT_ROOT


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_project(PROJECT_ROOT, "")


def test_keys_and_request_features_are_typed_from_the_sources(catalog: Catalog) -> None:
    api = api_models(catalog.models[MODEL], catalog.resolved[MODEL], catalog)
    assert api.entity_types == {"customer_id": "int64", "merchant_id": "int64"}
    assert api.feature_types == {
        "amount": "float64",
        "hour_of_day": "int64",
        "is_international": "int64",
        "channel": "string",
        "merchant_category": "string",
    }
    schema = api.request.model_json_schema()
    definitions = schema["$defs"]
    assert definitions["FraudDetectionEntity"]["required"] == ["customer_id", "merchant_id"]
    features = definitions["FraudDetectionRequestFeatures"]["properties"]
    assert features["amount"]["type"] == "number"
    assert features["hour_of_day"]["type"] == "integer"
    assert features["channel"]["type"] == "string"
    ids = definitions["FraudDetectionIdentifiers"]["properties"]
    assert set(ids) == {"transaction_id"}  # the label source's other *_id column
    parsed = api.request.model_validate({**CALL, "ids": {"transaction_id": 9, "order": "x"}})
    assert parsed.ids.model_dump() == {"transaction_id": 9, "order": "x"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"entity": {"customer_id": "seven", "merchant_id": 3}}, ("entity", "customer_id")),
        ({"entity": {"customer_id": 7}}, ("entity", "merchant_id")),
        ({"entity": {"customer_id": 7, "merchant_id": 3, "card": 1}}, ("entity", "card")),
        ({"features": {**CALL["features"], "amount": "a lot"}}, ("features", "amount")),
        ({"features": {"amount": 1.0}}, ("features", "channel")),
        ({"extra": 1}, ("extra",)),
    ],
)
def test_a_malformed_call_names_the_field(
    catalog: Catalog, change: dict, location: tuple[str, ...]
) -> None:
    api = api_models(catalog.models[MODEL], catalog.resolved[MODEL], catalog)
    with pytest.raises(ValidationError) as raised:
        api.request.model_validate({**CALL, **change})
    assert location in [tuple(error["loc"]) for error in raised.value.errors()]


def test_a_batch_holds_one_to_a_thousand_calls(catalog: Catalog) -> None:
    api = api_models(catalog.models[MODEL], catalog.resolved[MODEL], catalog)
    assert len(api.batch_request.model_validate({"instances": [CALL] * 3}).instances) == 3  # type: ignore[attr-defined]
    for instances in ([], [CALL] * 1001):
        with pytest.raises(ValidationError):
            api.batch_request.model_validate({"instances": instances})


@pytest.mark.parametrize(
    ("task", "prediction"),
    [
        ("binary_classification", {"type": "number", "minimum": 0.0, "maximum": 1.0}),
        ("multiclass_classification", {"type": "array", "items": {"type": "number"}}),
        ("regression", {"type": "number"}),
    ],
)
def test_the_prediction_type_follows_the_task(
    catalog: Catalog, task: str, prediction: dict
) -> None:
    spec = catalog.models[MODEL].model_copy(update={"task": task})
    api = api_models(spec, catalog.resolved[MODEL], catalog)
    shown = api.response.model_json_schema()["properties"]["prediction"]
    assert {k: v for k, v in shown.items() if k in prediction} == prediction
    assert api.response.__name__ == f"{class_prefix(MODEL)}Prediction" == "FraudDetectionPrediction"


def samples(metrics: ServingMetrics) -> dict[tuple[str, tuple[str, ...]], float]:
    """(sample name, sorted label values) -> value, as Prometheus reads the text."""
    from prometheus_client.parser import text_string_to_metric_families

    text = metrics.render()[0].decode()
    return {
        (sample.name, tuple(v for _, v in sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_label_versions_and_drop_what_is_no_longer_served() -> None:
    # A model name of its own: in prometheus_client's multiprocess mode (switched on for the
    # whole process when PROMETHEUS_MULTIPROC_DIR is set, as importing feast.metrics does) a new
    # labelled value starts from what any earlier registry counted for the same labels.
    model = f"metrics_{uuid.uuid4().hex[:8]}"
    metrics = ServingMetrics()
    metrics.observe(model, "1", "champion", 200, 0.004)
    metrics.observe(model, None, None, 401, 0.0001)
    metrics.set_traffic(model, [("1", "champion", 0.8), ("2", "canary", 0.2)])
    metrics.set_refusals(model, [("3", "gates")])
    shown = samples(metrics)
    latency = ("ml_platform_serving_latency_seconds_count", (model, "champion", "1"))
    refused = ("ml_platform_serving_requests_total", (model, "none", "401", "none"))
    assert shown[latency] == 1
    assert shown[refused] == 1
    assert shown["ml_platform_serving_traffic_share", (model, "canary", "2")] == 0.2
    assert shown["ml_platform_serving_refused_version", (model, "gates", "3")] == 1
    metrics.set_traffic(model, [("2", "champion", 1.0)])
    metrics.set_refusals(model, [])
    shown = samples(metrics)
    shares = {k: v for k, v in shown.items() if k[0] == "ml_platform_serving_traffic_share"}
    assert shares == {("ml_platform_serving_traffic_share", (model, "champion", "2")): 1.0}
    assert not [k for k in shown if k[0] == "ml_platform_serving_refused_version"]
    assert not samples(ServingMetrics()).get(  # each app has its own registry
        ("ml_platform_serving_requests_total", (model, "none", "401", "none"))
    )
