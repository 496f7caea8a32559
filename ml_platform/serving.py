"""MLflow pyfunc wrapper, logged as *model code* (MLflow "models from code").

Nothing is pickled: MLflow stores this file and the model directory (safetensors weights plus a
JSON description); loading runs this code and reads the weights with safetensors.
"""

from __future__ import annotations

from typing import Any

from mlflow.models import set_model
from mlflow.pyfunc.model import PythonModel


class PlatformModel(PythonModel):
    """Scores a DataFrame of model inputs with a model trained by ``ml_platform.training``."""

    def load_context(self, context: Any) -> None:
        from ml_platform.training import TrainedModel

        self.model = TrainedModel.load(context.artifacts["model"])

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        import pandas as pd

        prediction = self.model.predict(model_input)
        if prediction.ndim == 2:
            return pd.DataFrame({f"p_{i}": prediction[:, i] for i in range(prediction.shape[1])})
        return pd.DataFrame({"prediction": prediction})


set_model(PlatformModel())
