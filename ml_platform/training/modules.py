"""The networks: the built-in MLP, or an `nn.Module` subclass named by import path.

Training builds whatever architecture its (trusted) spec names. Loading a saved model builds only
an architecture the platform allows (`check_architecture_allowed`): "mlp", one listed in
``ML_PLATFORM_ALLOWED_ARCHITECTURES``, or one this process trained itself. The check runs before
anything is imported, so an edited ``model.json`` cannot make the loader import a module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ml_platform.core.helpers import import_object
from ml_platform.core.tasks import Task
from ml_platform.training.schema import ModelArchitectureError


def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.GELU()


MLP_PARAMS = ("hidden_sizes", "dropout", "activation")
BUILT_IN_ARCHITECTURE = "mlp"
ALLOWED_ARCHITECTURES_ENV = "ML_PLATFORM_ALLOWED_ARCHITECTURES"

# Architectures this process built for training: their modules are already imported, so loading
# a model of one of them runs no code that training did not already run.
_TRAINED_ARCHITECTURES: set[str] = set()


def allowed_architectures() -> tuple[str, ...]:
    """The entries of ``ML_PLATFORM_ALLOWED_ARCHITECTURES``, read now (not at import time).

    Returns:
        Comma-separated entries, stripped, empty ones dropped. An entry is either an exact
        architecture ``package.module:ClassName`` or a module prefix ``package.module``, which
        allows every class of that module and of its submodules.
    """
    value = os.environ.get(ALLOWED_ARCHITECTURES_ENV, "")
    return tuple(entry.strip() for entry in value.split(",") if entry.strip())


def record_trained_architecture(architecture: str) -> None:
    """Lets this process load models of an architecture it trains from its (trusted) spec.

    `build_module` calls it; a process that trains through workers (torchrun) and loads their
    output calls it itself.

    Args:
        architecture: The spec's ``model.architecture``.
    """
    _TRAINED_ARCHITECTURES.add(architecture)


def _is_allowed(architecture: str) -> bool:
    if architecture == BUILT_IN_ARCHITECTURE or architecture in _TRAINED_ARCHITECTURES:
        return True
    module_path = architecture.partition(":")[0]
    for entry in allowed_architectures():
        if ":" in entry:
            if architecture == entry:
                return True
        elif module_path == entry or module_path.startswith(entry + "."):
            return True
    return False


def check_architecture_allowed(architecture: object, source: str) -> str:
    """Refuses, without importing anything, an architecture the platform does not allow to load.

    Args:
        architecture: The architecture a saved model names.
        source: Where it was read, for the error message (a ``model.json`` path).

    Returns:
        The architecture, known to be a string.

    Raises:
        ModelArchitectureError: It is not "mlp", not allowed by
            ``ML_PLATFORM_ALLOWED_ARCHITECTURES`` and was not trained by this process.
    """
    if not isinstance(architecture, str) or not _is_allowed(architecture):
        raise ModelArchitectureError(
            f"{source} names architecture {architecture!r}, which this platform does not allow "
            f"to load (nothing was imported); allowed: {BUILT_IN_ARCHITECTURE!r} and "
            f"{ALLOWED_ARCHITECTURES_ENV}={','.join(allowed_architectures())!r}. If the model "
            f"is yours, add its 'package.module:ClassName' or its module to "
            f"{ALLOWED_ARCHITECTURES_ENV} (comma-separated)"
        )
    return architecture


def _build_mlp(input_dim: int, output_dim: int, params: Mapping[str, Any]) -> nn.Module:
    unknown = sorted(set(params) - set(MLP_PARAMS))
    if unknown:
        raise ModelArchitectureError(
            f"model.params for architecture 'mlp' accept {list(MLP_PARAMS)}; got unknown {unknown}"
        )
    hidden_sizes = params.get("hidden_sizes", [256, 256])
    dropout = params.get("dropout", 0.0)
    activation = params.get("activation", "relu")
    if not isinstance(hidden_sizes, list | tuple) or not all(
        isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in hidden_sizes
    ):
        raise ModelArchitectureError(
            f"model.params.hidden_sizes must be a list of positive integers, got {hidden_sizes!r}"
        )
    if not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
        raise ModelArchitectureError(f"model.params.dropout must be in [0, 1), got {dropout!r}")
    if activation not in ("relu", "gelu"):
        raise ModelArchitectureError(
            f"model.params.activation must be 'relu' or 'gelu', got {activation!r}"
        )
    layers: list[nn.Module] = []
    width = input_dim
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), _activation(activation)]
        # No Dropout layers at 0: they would only add kernel launches.
        if dropout > 0:
            layers.append(nn.Dropout(float(dropout)))
        width = size
    layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)


def _import_architecture(architecture: str) -> type[nn.Module]:
    hint = "use 'mlp' or 'package.module:ClassName'"
    module_path, separator, attribute_path = architecture.partition(":")
    if not separator or not module_path or not attribute_path or ":" in attribute_path:
        raise ModelArchitectureError(
            f"model.architecture {architecture!r} is neither 'mlp' nor an import path; {hint}"
        )
    try:
        target = import_object(architecture, "model.architecture")
    except ImportError as error:
        # import_object chains the module's import error; a missing attribute has no cause.
        if error.__cause__ is not None:
            problem = f"module {module_path!r} could not be imported ({error.__cause__})"
        else:
            problem = f"module {module_path!r} has no attribute {attribute_path!r}"
        raise ModelArchitectureError(
            f"model.architecture {architecture!r}: {problem}; {hint}"
        ) from error
    if not (isinstance(target, type) and issubclass(target, nn.Module)):
        raise ModelArchitectureError(
            f"model.architecture {architecture!r} is not a torch.nn.Module subclass (it is "
            f"{type(target).__name__} {target!r}); point it at a class that extends nn.Module"
        )
    return target


def build_module(
    architecture: str, input_dim: int, output_dim: int, params: Mapping[str, Any] | None
) -> nn.Module:
    """Builds the network from a spec's architecture and params, to train it.

    The spec is trusted: any importable architecture is built, and recorded so that this process
    may load the models it trains. Loading a saved model goes through
    `check_architecture_allowed` first.

    Args:
        architecture: "mlp", or "package.module:ClassName" naming an nn.Module subclass that is
            constructed as `ClassName(input_dim=..., output_dim=..., **params)`.
        input_dim: Width of the encoded feature matrix.
        output_dim: 1 for binary and regression, the number of classes for multiclass.
        params: For "mlp": hidden_sizes (default [256, 256]), dropout (default 0.0) and
            activation ("relu" or "gelu", default "relu"). Otherwise the constructor's keywords.

    Returns:
        The module, on CPU.

    Raises:
        ModelArchitectureError: The architecture cannot be imported, is not an nn.Module, or
            rejects the params.
    """
    params = dict(params or {})
    if architecture == BUILT_IN_ARCHITECTURE:
        return _build_mlp(input_dim, output_dim, params)
    module_class = _import_architecture(architecture)
    record_trained_architecture(architecture)
    reserved = sorted({"input_dim", "output_dim"} & set(params))
    if reserved:
        raise ModelArchitectureError(
            f"model.params must not set {reserved} for {architecture!r}: the trainer passes them "
            f"from the data"
        )
    try:
        module = module_class(input_dim=input_dim, output_dim=output_dim, **params)
    except Exception as error:
        raise ModelArchitectureError(
            f"model.architecture {architecture!r}: constructing {module_class.__name__}"
            f"(input_dim={input_dim}, output_dim={output_dim}, **params) failed with "
            f"{type(error).__name__}: {error}; params passed: {params!r}"
        ) from error
    return module


def check_output_shape(module: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> None:
    """Runs two rows through the module so shape mistakes fail before the first epoch.

    Args:
        module: The network, on the device `x` is on.
        x: Training features; the first two rows are used.
        y: Training labels; for multiclass, their largest class index sets the classes needed.
        task: What the module predicts.

    Raises:
        ModelArchitectureError: The output is not (rows, 1) or (rows,), or for multiclass not
            (rows, n_classes).
    """
    was_training = module.training
    module.eval()
    # no_grad rather than inference_mode: lazy modules create their parameters here.
    with torch.no_grad():
        output = module(x[:2])
    module.train(was_training)
    shape = tuple(output.shape)
    if task == "multiclass_classification":
        classes = int(y.max().item()) + 1
        if output.ndim != 2 or output.shape[1] < max(classes, 2):
            raise ModelArchitectureError(
                f"the module returns shape {shape} for 2 rows; multiclass_classification with "
                f"{classes} classes in y_train needs (rows, n_classes >= {max(classes, 2)})"
            )
    elif not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
        raise ModelArchitectureError(
            f"the module returns shape {shape} for 2 rows; {task} needs (rows, 1) or (rows,)"
        )
