"""Export the example model's preprocessed training arrays, for trainer benches without pandas.

The GPU machine has torch and numpy only; this writes what the platform trainer would feed the
fraud_detection model (features after the platform's Preprocessor) to an .npz file.
Usage: .venv/bin/python bench/export_example_arrays.py --rows 300000 --out bench/example_arrays.npz
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from examples.payments.generator import generate
from ml_platform.core.settings import PlatformSettings
from ml_platform.datasets.training_set import build_training_set, read_split
from ml_platform.lifecycle.training_inputs import feature_schema
from ml_platform.spec.loading import load_project
from ml_platform.training.preprocessing import Preprocessor

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--out", default="bench/example_arrays.npz")
    args = parser.parse_args()
    catalog = load_project(PROJECT_ROOT, "")
    spec, resolved = catalog.models["fraud_detection"], catalog.resolved["fraud_detection"]
    repo = catalog.repo_of_source(spec.label.source)
    with tempfile.TemporaryDirectory() as home:
        settings = PlatformSettings.from_env(home=Path(home))
        generate(
            {s.name: settings.data_path(s.path) for s in repo.sources}, n_transactions=args.rows
        )
        from ml_platform.features.store import apply_feature_repo

        apply_feature_repo(repo, settings)
        manifest = build_training_set(spec, resolved, catalog, settings)
        train, validation = read_split(manifest, "train"), read_split(manifest, "validation")
    schema = feature_schema(spec, resolved)
    preprocessor = Preprocessor.fit(train, schema)
    np.savez(
        args.out,
        x_train=preprocessor.transform(train),
        y_train=preprocessor.encode_labels(train),
        x_val=preprocessor.transform(validation),
        y_val=preprocessor.encode_labels(validation),
    )
    print(f"wrote {args.out}: {len(train)} train rows, {len(preprocessor.feature_names)} features")


if __name__ == "__main__":
    main()
