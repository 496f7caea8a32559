"""The trained model: predicts on DataFrames, saves as safetensors and JSON, loads without pickle.

pandas is needed only by the caller's DataFrames: this module imports torch, numpy and safetensors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ml_platform.core.storage import write_atomically
from ml_platform.training.model_files import read_saved_model
from ml_platform.training.modules import build_module, check_architecture_allowed
from ml_platform.training.preprocessing import Preprocessor
from ml_platform.training.schema import FeatureSchema

if TYPE_CHECKING:
    import pandas as pd

MODEL_FORMAT_VERSION = 1
WEIGHTS_FILENAME = "model.safetensors"
METADATA_FILENAME = "model.json"
PREDICT_BATCH_SIZE = 65536
WEIGHTS_CHECKSUM_KEY = "weights_sha256"
# A safetensors header is a little-endian u64 length then that much JSON; real ones are small.
MAX_SAFETENSORS_HEADER_BYTES = 100 * 1024 * 1024

logger = logging.getLogger(__name__)


def weights_checksum(path: Path) -> str:
    """The sha256 of a file, hex, read in chunks.

    Args:
        path: The weights file.

    Returns:
        64 hex digits.
    """
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_weights(weights_path: Path, metadata: dict[str, Any], metadata_path: Path) -> None:
    """Refuses weights that differ from those saved, or that are not a safetensors file.

    Models saved before the checksum existed load with a warning: safetensors cannot run code,
    and the architecture is checked regardless, so only their integrity goes unverified.
    """
    recorded = metadata.get(WEIGHTS_CHECKSUM_KEY)
    if recorded is None:
        logger.warning(
            "%s has no %s (saved before checksums existed): %s is loaded unverified; save the "
            "model again to record one",
            metadata_path,
            WEIGHTS_CHECKSUM_KEY,
            weights_path,
        )
    else:
        actual = weights_checksum(weights_path)
        if actual != recorded:
            raise ValueError(
                f"{weights_path} has sha256 {actual}, but {metadata_path} records "
                f"{WEIGHTS_CHECKSUM_KEY} {recorded!r}: the weights or the metadata were modified "
                f"after saving; refusing to load. Restore both files from the same save"
            )
    with weights_path.open("rb") as stream:
        prefix = stream.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
        header = stream.read(length) if 0 < length <= MAX_SAFETENSORS_HEADER_BYTES else b""
    try:
        parsed = json.loads(header) if header else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ValueError(
            f"{weights_path} is not a safetensors file (no valid header); refusing to load it. "
            f"Weights are read from safetensors only, never unpickled"
        )


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

        Nothing is pickled, so loading never runs code from the files. `model.json` records the
        sha256 of the weights, which `load` checks.

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
        metadata[WEIGHTS_CHECKSUM_KEY] = weights_checksum(target / WEIGHTS_FILENAME)
        text = json.dumps(metadata, indent=2, sort_keys=True)
        write_atomically(target / METADATA_FILENAME, lambda path: path.write_text(text))

    @classmethod
    def load(cls, directory: str | Path) -> TrainedModel:
        """Loads a model written by `save`, without unpickling or importing anything unallowed.

        Before anything is imported or read as weights, the architecture `model.json` names must
        be allowed (`modules.check_architecture_allowed`: "mlp", an entry of
        ``ML_PLATFORM_ALLOWED_ARCHITECTURES``, or one this process trained), and the weights must
        be a safetensors file whose sha256 matches the one `save` recorded. Models saved before
        the checksum existed load with a logged warning.

        Args:
            directory: Holds `model.json` and `model.safetensors`.

        Returns:
            The model, on CPU, in eval mode.

        Raises:
            ValueError: The files are missing or unreadable, of an unknown format version, name
                an architecture that is not allowed (`ModelArchitectureError`), have weights that
                differ from those saved or are not safetensors, or do not match the architecture.
        """
        from safetensors.torch import load_model

        source = Path(directory)
        metadata_path, weights_path = source / METADATA_FILENAME, source / WEIGHTS_FILENAME
        metadata = read_saved_model(
            source,
            WEIGHTS_FILENAME,
            "was the model saved with TrainedModel.save?",
            MODEL_FORMAT_VERSION,
        )
        architecture = check_architecture_allowed(metadata.get("architecture"), str(metadata_path))
        _check_weights(weights_path, metadata, metadata_path)
        preprocessor = Preprocessor.from_dict(metadata["preprocessor"])
        # Initial weights are overwritten below; forking keeps callers' random streams intact.
        with torch.random.fork_rng(devices=[]):
            module = build_module(
                architecture,
                len(preprocessor.feature_names),
                preprocessor.output_dim,
                metadata["model_params"],
            )
        try:
            load_model(module, weights_path, strict=True, device="cpu")
        except Exception as error:
            # RuntimeError on a shape mismatch, SafetensorError on a corrupt body.
            raise ValueError(
                f"{weights_path} does not match architecture {architecture!r} with "
                f"params {metadata['model_params']!r}: {error}"
            ) from error
        module.eval()
        return cls(
            module=module,
            preprocessor=preprocessor,
            schema=FeatureSchema.from_dict(metadata["schema"]),
            architecture=architecture,
            model_params=metadata["model_params"],
        )
