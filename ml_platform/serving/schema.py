"""The prediction API's request and response models, built per model from its spec.

A model's inputs are its request-time features (``features.request``: columns of the label
source, sent by the caller with each call) and its Feast features (read from the online store by
the entity's join keys). So a call names the entity by its join keys, typed as the feature
repo's sources declare them, and sends every request-time feature, typed as the label source
declares it; both are required, and unknown fields are refused, so a malformed call is a 422
naming the field. ``ids`` carries optional identifiers (the label source's other ``*_id``
columns, such as ``transaction_id``) recorded with the call to join labels later. The answer's
``prediction`` follows the task: a probability for binary classification, one probability per
class for multiclass, a number in the label's units for regression. These models are what
``/openapi.json`` shows (pydantic, imported here: serving only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from ml_platform.spec.catalog import Catalog, ResolvedFeatures
from ml_platform.spec.model import ModelSpec

if TYPE_CHECKING:
    from pydantic import BaseModel

MAX_BATCH = 1000
"""The most instances one batch call may hold."""

PYTHON_TYPES: dict[str, type] = {
    "int64": int,
    "int32": int,
    "float64": float,
    "float32": float,
    "string": str,
    "bool": bool,
    "timestamp": datetime,
}


@dataclass(frozen=True)
class ApiModels:
    """The pydantic models of one model's endpoints.

    Attributes:
        entity: The entity's join keys.
        features: The request-time features.
        ids: Optional identifiers recorded with the call.
        request: One call: ``entity``, ``features``, ``ids``.
        response: One answer: request id, model, version, role, prediction.
        batch_request: ``instances``: a list of ``request``.
        batch_response: ``predictions``: a list of ``response``.
        error: The body of every error but 422 (``detail`` and ``request_id``).
        entity_types: Join key -> column type (``int64``...).
        feature_types: Request-time feature -> column type.
    """

    entity: type[BaseModel]
    features: type[BaseModel]
    ids: type[BaseModel]
    request: type[BaseModel]
    response: type[BaseModel]
    batch_request: type[BaseModel]
    batch_response: type[BaseModel]
    error: type[BaseModel]
    entity_types: dict[str, str]
    feature_types: dict[str, str]


def class_prefix(model: str) -> str:
    """The model's name in CamelCase, prefixing its schema names (``FraudDetection``).

    Args:
        model: The model's name.

    Returns:
        Each ``_``-separated part capitalized and joined.
    """
    return "".join(part[:1].upper() + part[1:] for part in model.split("_") if part)


def view_join_keys(resolved: ResolvedFeatures, catalog: Catalog) -> dict[str, list[str]]:
    """The join keys of each of a model's feature views.

    Args:
        resolved: The model's resolved features (their views).
        catalog: The loaded specs (the views' entities).

    Returns:
        Feature view -> the join keys of its entities, in order.
    """
    views = catalog.feature_views()
    keys: dict[str, list[str]] = {}
    for view_name in resolved.feature_views:
        repo, view = views[view_name]
        entities = {e.name: e.join_keys for e in repo.entities}
        keys[view_name] = [k for name in view.entities for k in entities[name]]
    return keys


def entity_types(resolved: ResolvedFeatures, catalog: Catalog) -> dict[str, str]:
    """The join keys of a model's feature views and their column types.

    Args:
        resolved: The model's resolved features (their views).
        catalog: The loaded specs (the views' sources declare the key columns).

    Returns:
        Join key -> the column type declared by the first view's source holding it.
    """
    views = catalog.feature_views()
    sources = catalog.sources()
    types: dict[str, str] = {}
    for view_name, keys in view_join_keys(resolved, catalog).items():
        columns = sources[views[view_name][1].source][1].columns
        for key in keys:
            types.setdefault(key, columns.get(key, "string"))
    return types


def identifier_columns(spec: ModelSpec, catalog: Catalog, entity_keys: list[str]) -> list[str]:
    """The label source's ``*_id`` columns that are not join keys (e.g. ``transaction_id``).

    Args:
        spec: The model spec (its label source).
        catalog: The loaded specs.
        entity_keys: The model's join keys.

    Returns:
        The identifier columns, in the source's order.
    """
    _, source = catalog.sources()[spec.label.source]
    return [c for c in source.columns if c.endswith("_id") and c not in entity_keys]


def _prediction_field(spec: ModelSpec) -> tuple[Any, Any]:
    """The ``prediction`` field's type and pydantic Field for the model's task."""
    from pydantic import Field

    label = spec.label.column
    if spec.task == "binary_classification":
        return float, Field(
            ge=0.0, le=1.0, description=f"The probability that '{label}' is the positive class."
        )
    if spec.task == "multiclass_classification":
        return list[float], Field(
            description=f"One probability per class of '{label}', in the training classes' "
            "order; they sum to 1."
        )
    return float, Field(description=f"The predicted '{label}', in the label's units.")


def api_models(spec: ModelSpec, resolved: ResolvedFeatures, catalog: Catalog) -> ApiModels:
    """Build a model's request and response models from its spec.

    Args:
        spec: The model spec (task, label, request-time features).
        resolved: Its resolved features (the feature views, so the join keys).
        catalog: The loaded specs (column types).

    Returns:
        The models, named ``<Model>Entity``, ``<Model>Request``, ``<Model>Prediction``...
    """
    prefix = class_prefix(spec.name)
    keys = entity_types(resolved, catalog)
    _, label_source = catalog.sources()[spec.label.source]
    request_types = {name: label_source.columns[name] for name in resolved.request}
    by_view = view_join_keys(resolved, catalog)
    view_of = {k: [v for v, view_keys in by_view.items() if k in view_keys] for k in keys}

    entity = _columns_model(
        f"{prefix}Entity",
        f"The entity scored by '{spec.name}': its join keys in the online store.",
        keys,
        lambda key, kind: f"Join key ({kind}) of the feature views {view_of[key]}.",
    )
    features = _columns_model(
        f"{prefix}RequestFeatures",
        f"The request-time features of '{spec.name}', known when the call is made.",
        request_types,
        lambda _, kind: f"Request-time feature ({kind}), a column of '{label_source.name}'.",
    )
    id_columns = identifier_columns(spec, catalog, list(keys))
    ids = _identifiers_model(prefix, {name: label_source.columns[name] for name in id_columns})
    request = _request_model(spec, prefix, entity, features, ids, bool(request_types))
    response = _response_model(spec, prefix)
    batch_request, batch_response = _batch_models(spec, prefix, request, response)
    return ApiModels(
        entity=entity,
        features=features,
        ids=ids,
        request=request,
        response=response,
        batch_request=batch_request,
        batch_response=batch_response,
        error=_error_model(),
        entity_types=keys,
        feature_types=request_types,
    )


def _columns_model(
    name: str, doc: str, columns: dict[str, str], describe: Callable[[str, str], str]
) -> type[BaseModel]:
    """A model refusing unknown fields, one required field per column typed by its kind."""
    from pydantic import ConfigDict, Field, create_model

    fields: dict[str, Any] = {
        column: (PYTHON_TYPES.get(kind, str), Field(description=describe(column, kind)))
        for column, kind in columns.items()
    }
    return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=doc, **fields)


def _identifiers_model(prefix: str, columns: dict[str, str]) -> type[BaseModel]:
    """The optional identifiers of a call, by column -> kind (other fields are kept too)."""
    from pydantic import ConfigDict, Field, create_model

    id_fields: dict[str, Any] = {
        name: (
            PYTHON_TYPES.get(kind, str) | None,
            Field(default=None, description=f"Identifier of the scored row ({name})."),
        )
        for name, kind in columns.items()
    }
    return create_model(
        f"{prefix}Identifiers",
        __config__=ConfigDict(extra="allow"),
        __doc__="Optional identifiers recorded with the call, to join labels with it later.",
        **id_fields,
    )


def _request_model(
    spec: ModelSpec,
    prefix: str,
    entity: type[BaseModel],
    features: type[BaseModel],
    ids: type[BaseModel],
    has_features: bool,
) -> type[BaseModel]:
    """One call: the entity, its request-time features (optional when there are none), ids."""
    from pydantic import ConfigDict, Field, create_model

    features_field: Any = (
        Field(description="The request-time features.")
        if has_features
        else Field(default_factory=features, description="No request-time features.")
    )
    return create_model(
        f"{prefix}Request",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"One call of '{spec.name}': the entity, its request-time features, identifiers.",
        entity=(entity, Field(description="The entity's join keys.")),
        features=(features, features_field),
        ids=(ids, Field(default_factory=ids, description="Optional identifiers.")),
    )


def _response_model(spec: ModelSpec, prefix: str) -> type[BaseModel]:
    """One answer: the call's id, the model, the version and role that answered, the prediction."""
    from pydantic import Field, create_model

    prediction_type, prediction_field = _prediction_field(spec)
    return create_model(
        f"{prefix}Prediction",
        __doc__=f"The answer of '{spec.name}' for one call.",
        request_id=(str, Field(description="The call's id in the call trail (uuid4 hex).")),
        model=(str, Field(description="The model's name.")),
        model_version=(str, Field(description="The registered MLflow version that answered.")),
        role=(
            Literal["champion", "canary"],
            Field(description="Whether the champion or the canary answered."),
        ),
        prediction=(prediction_type, prediction_field),
    )


def _batch_models(
    spec: ModelSpec, prefix: str, request: type[BaseModel], response: type[BaseModel]
) -> tuple[type[BaseModel], type[BaseModel]]:
    """The batch request (a list of calls) and its answer (a list of answers)."""
    from pydantic import ConfigDict, Field, create_model

    batch_request = create_model(
        f"{prefix}BatchRequest",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"Several calls of '{spec.name}' at once; each is its own call in the trail.",
        instances=(
            list[request],  # pyright: ignore[reportInvalidTypeForm]
            Field(min_length=1, max_length=MAX_BATCH, description="The calls, in order."),
        ),
    )
    batch_response = create_model(
        f"{prefix}BatchPrediction",
        __doc__="One answer per instance, in the instances' order.",
        predictions=(
            list[response],  # pyright: ignore[reportInvalidTypeForm]
            Field(description="The answers."),
        ),
    )
    return batch_request, batch_response


def _error_model() -> type[BaseModel]:
    """The body of an error: why the call failed, and its id in the call trail."""
    from pydantic import BaseModel, Field

    class ErrorBody(BaseModel):
        """Why a call failed, and its id in the call trail."""

        detail: str
        request_id: str
        request_ids: list[str] | None = Field(
            default=None, description="A batch's calls, one id per instance, in order."
        )

    return ErrorBody
