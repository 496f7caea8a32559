"""The trained model: predicts on DataFrames, saves as safetensors and JSON, loads without pickle.

pandas is needed only by the caller's DataFrames: this module imports torch, numpy and safetensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ml_platform.core.storage import write_atomically
from ml_platform.training.modules import build_module
from ml_platform.training.preprocessing import Preprocessor
from ml_platform.training.schema import FeatureSchema

if TYPE_CHECKING:
    import pandas as pd

MODEL_FORMAT_VERSION = 1
WEIGHTS_FILENAME = "model.safetensors"
METADATA_FILENAME = "model.json"
PREDICT_BATCH_SIZE = 65536


@dataclass(eq=False)
class TrainedModel:
    """A trained module with everything needed to predict on raw DataFrames.

    Attributes:
        module: The network, on CPU unless moved.
        preprocessor: Encoder fitted on the training split.
        schema: Columns and task.
        architecture: "mlp" or the "package.module:ClassName" it was built from.
        model_params: The params the module was built with.
    """

    module: nn.Module
    preprocessor: Preprocessor
    schema: FeatureSchema
    architecture: str
    model_params: dict[str, Any]

    def predict(self, frame: pd.DataFrame, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
        """Predicts on raw rows.

        Args:
            frame: Rows with the schema's feature columns (the label is not needed).
            batch_size: Rows per forward pass.

        Returns:
            float64: binary, the probability of class 1 (N,); multiclass, class probabilities
            (N, C) in the order of `preprocessor.classes`; regression, values (N,) in the
            label's units.
        """
        features = self.preprocessor.transform(frame)
        parameter = next(iter(self.module.parameters()), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        task = self.schema.task
        self.module.eval()
        outputs: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, features.shape[0], batch_size):
                batch = torch.from_numpy(features[start : start + batch_size]).to(device)
                output = self.module(batch).float()
                if task == "multiclass_classification":
                    output = torch.softmax(output, dim=1)
                else:
                    output = output.reshape(-1)
                    if task == "binary_classification":
                        output = torch.sigmoid(output)
                outputs.append(output.cpu())
        if outputs:
            predictions = torch.cat(outputs).numpy().astype(np.float64)
        elif task == "multiclass_classification":
            predictions = np.zeros((0, self.preprocessor.output_dim), dtype=np.float64)
        else:
            predictions = np.zeros((0,), dtype=np.float64)
        if task == "regression":
            predictions = self.preprocessor.inverse_transform_target(predictions)
        return predictions

    def save(self, directory: str | Path) -> None:
        """Writes `model.safetensors` (weights) and `model.json` (everything else) to a directory.

        Nothing is pickled, so loading never runs code from the files.

        Args:
            directory: Created if missing; existing files of the same names are replaced.
        """
        from safetensors.torch import save_model

        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        metadata = {
            "format_version": MODEL_FORMAT_VERSION,
            "architecture": self.architecture,
            "model_params": self.model_params,
            "schema": self.schema.to_dict(),
            "preprocessor": self.preprocessor.to_dict(),
            "torch_version": torch.__version__,
        }
        try:
            text = json.dumps(metadata, indent=2, sort_keys=True)
        except TypeError as error:
            raise ValueError(
                f"model_params must be JSON-serializable to be saved in {METADATA_FILENAME}: "
                f"{error}"
            ) from error

        def write_weights(path: Path) -> None:
            # save_model drops tensors that share storage (tied weights) and makes the rest
            # contiguous; load_model restores the ties.
            save_model(
                self.module,
                str(path),
                metadata={"ml_platform_format_version": str(MODEL_FORMAT_VERSION)},
                force_contiguous=True,
            )

        write_atomically(target / WEIGHTS_FILENAME, write_weights)
        write_atomically(target / METADATA_FILENAME, lambda path: path.write_text(text))

    @classmethod
    def load(cls, directory: str | Path) -> TrainedModel:
        """Loads a model written by `save`, without unpickling anything.

        Args:
            directory: Holds `model.json` and `model.safetensors`.

        Returns:
            The model, on CPU, in eval mode.

        Raises:
            ValueError: The files are missing, of an unknown format version, or do not match
                the architecture.
        """
        from safetensors.torch import load_model

        source = Path(directory)
        metadata_path, weights_path = source / METADATA_FILENAME, source / WEIGHTS_FILENAME
        for path in (metadata_path, weights_path):
            if not path.exists():
                raise ValueError(
                    f"{path} does not exist; was the model saved with TrainedModel.save?"
                )
        metadata = json.loads(metadata_path.read_text())
        version = metadata.get("format_version")
        if version != MODEL_FORMAT_VERSION:
            raise ValueError(
                f"{metadata_path} has format_version {version!r}; this ml_platform reads "
                f"{MODEL_FORMAT_VERSION}"
            )
        preprocessor = Preprocessor.from_dict(metadata["preprocessor"])
        # Initial weights are overwritten below; forking keeps callers' random streams intact.
        with torch.random.fork_rng(devices=[]):
            module = build_module(
                metadata["architecture"],
                len(preprocessor.feature_names),
                preprocessor.output_dim,
                metadata["model_params"],
            )
        try:
            load_model(module, weights_path, strict=True, device="cpu")
        except RuntimeError as error:
            raise ValueError(
                f"{weights_path} does not match architecture {metadata['architecture']!r} with "
                f"params {metadata['model_params']!r}: {error}"
            ) from error
        module.eval()
        return cls(
            module=module,
            preprocessor=preprocessor,
            schema=FeatureSchema.from_dict(metadata["schema"]),
            architecture=metadata["architecture"],
            model_params=metadata["model_params"],
        )
