"""MLflow pyfunc wrapper, logged as *model code* (MLflow "models from code").

Nothing is pickled: MLflow stores this file and the model directory (the flavor's own formats,
e.g. safetensors weights or an XGBoost JSON model, plus ``model.json``); loading runs this code,
which rebuilds the model through its flavor. MLflow imports this module itself, so it imports
MLflow at the top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc.model import PythonModel


class PlatformModel(PythonModel):
    """Scores a DataFrame of model inputs with a model fitted by any of the platform's flavors."""

    def load_context(self, context: Any) -> None:
        """Rebuild the fitted model from the version's ``model`` artifact directory.

        Args:
            context: MLflow's context; ``context.artifacts["model"]`` is the local directory.
        """
        from ml_platform.training.flavors.registry import load_fitted

        self.model = load_fitted(Path(context.artifacts["model"]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> Any:
        """Score ``model_input``.

        Args:
            context: MLflow's context (unused).
            model_input: A DataFrame with the model's input columns.
            params: Inference parameters (none are supported).

        Returns:
            A DataFrame: ``prediction`` for binary and regression models, ``p_<i>`` per class
            for multiclass models.
        """
        prediction = self.model.predict(model_input)
        if prediction.ndim == 2:
            return pd.DataFrame({f"p_{i}": prediction[:, i] for i in range(prediction.shape[1])})
        return pd.DataFrame({"prediction": prediction})


set_model(PlatformModel())
