"""The PyTorch flavor: the platform's trainer (`training.trainer`) behind `Flavor`.

The model is the trainer's `TrainedModel` (safetensors weights and ``model.json``), with the two
things the protocol adds: its flavor name and the truth encoding shared by all flavors.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ml_platform.core.storage import write_atomically
from ml_platform.training.flavors.base import (
    METADATA_FILENAME,
    FitJob,
    FitResult,
    Flavor,
    encode_truth,
)
from ml_platform.training.model import TrainedModel
from ml_platform.training.result import RESULT_FIELDS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ml_platform.training.trainer import TrainResult


class TorchModel(TrainedModel):
    """A `TrainedModel` that is a `FittedModel`: it names its flavor in ``model.json``."""

    flavor: ClassVar[str] = "torch"

    @classmethod
    def of(cls, model: TrainedModel) -> TorchModel:
        """The same model (sharing its module and preprocessor) as a `TorchModel`."""
        return cls(**{field.name: getattr(model, field.name) for field in fields(model)})

    def encode_labels(self, frame: pd.DataFrame) -> np.ndarray:
        """Class indices for multiclass, the label column otherwise (`base.encode_truth`)."""
        return encode_truth(self.preprocessor, frame)

    def save(self, directory: str | Path) -> None:
        """Writes the trainer's files, with ``"flavor": "torch"`` added to ``model.json``.

        Args:
            directory: Created if missing; existing files of the same names are replaced.
        """
        super().save(directory)
        path = Path(directory) / METADATA_FILENAME
        metadata = {**json.loads(path.read_text()), "flavor": self.flavor}
        text = json.dumps(metadata, indent=2, sort_keys=True)
        write_atomically(path, lambda temporary: temporary.write_text(text))


def fit_result(result: TrainResult) -> FitResult:
    """The trainer's result (in process or from torchrun) as the flavor protocol's.

    Args:
        result: What `training.trainer.train` or `training.distributed.train_with_torchrun`
            returned.

    Returns:
        The same facts, the model as a `TorchModel`.
    """
    facts = {name: getattr(result, name) for name in RESULT_FIELDS}
    return FitResult(model=TorchModel.of(result.model), **facts)


class TorchFlavor(Flavor):
    """Trains an MLP or a custom ``nn.Module`` with the platform's PyTorch trainer."""

    name = "torch"

    def _fit(self, job: FitJob) -> FitResult:
        """Trains with `training.trainer.train`; ``job.architecture`` picks the module."""
        # The training loop is imported to train only: loading a model needs model.py alone.
        from ml_platform.training.trainer import train

        result = train(
            job.train,
            job.validation,
            job.schema,
            job.architecture,
            job.params,
            job.config,
            checkpoint_dir=job.checkpoint_dir,
            on_epoch_end=job.on_epoch_end,
            log=job.log,
        )
        return fit_result(result)

    def load(self, directory: str | Path) -> TorchModel:
        """Loads a model saved by this flavor or by `TrainedModel.save`, without pickle.

        `TrainedModel.load` refuses an architecture the platform does not allow (before importing
        it) and weights whose sha256 differs from the one recorded at save time.

        Args:
            directory: Holds ``model.json`` and ``model.safetensors``.

        Returns:
            The model, on CPU, in eval mode.
        """
        return TorchModel.of(TrainedModel.load(directory))


FLAVOR = TorchFlavor()
