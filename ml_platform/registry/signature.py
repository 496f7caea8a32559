"""A registered version's input example and signature, from the model's own schema."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from ml_platform.training.flavors.base import FittedModel

# MLflow's advice on integer columns when it infers a schema (see where it is filtered).
INTEGER_COLUMNS_HINT = "Hint: Inferred schema contains integer column"


def example_and_signature(model: FittedModel, rows: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
    """The version's input example and signature, built from the model's own schema.

    The example is the first five rows of the schema's feature columns, in schema order; the
    signature's outputs are what the served model (``registry/pyfunc.py``) returns for them: a
    ``prediction`` column, or ``p_<i>`` per class.

    Args:
        model: The fitted model.
        rows: Model input rows holding the schema's feature columns.

    Returns:
        The example and its ``ModelSignature``.
    """
    import pandas as pd
    from mlflow.models import infer_signature

    columns = [*model.schema.numeric, *model.schema.categorical]
    example = rows.loc[:, columns].head(5).reset_index(drop=True)
    # Integer features may be missing when scored (the model imputes them): declare them as
    # doubles so MLflow's schema enforcement accepts NaN.
    example = example.astype(
        {c: "float64" for c in model.schema.numeric if example[c].dtype.kind in "iu"}
    )
    prediction = model.predict(example)
    if prediction.ndim == 2:
        output = pd.DataFrame({f"p_{i}": prediction[:, i] for i in range(prediction.shape[1])})
    else:
        output = pd.DataFrame({"prediction": prediction})
    with warnings.catch_warnings():
        # Left integer, only categorical codes: a category is a value, never a missing number.
        warnings.filterwarnings("ignore", INTEGER_COLUMNS_HINT, UserWarning)
        return example, infer_signature(example, output)
