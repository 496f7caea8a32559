"""Declarative specs: feature repositories and models, loaded from YAML and validated.

Two kinds of YAML file are read (any other YAML file is ignored):

- ``kind: features`` declares Feast definitions: entities, parquet sources (with their schema),
  feature views with TTLs and feature services (``spec.features``).
- ``kind: model`` declares one model: its features, label, task, split, flavor and parameters,
  compute profile, evaluation and retraining policy (``spec.model``).

``spec.loading`` discovers and reads the files, ``spec.catalog`` resolves every model against the
feature repositories, ``spec.errors`` turns validation errors into messages that name the file,
the field and the fix. Everything here is pure Python + pydantic: loading specs never imports
Feast, torch or MLflow, so the code location loads fast.
"""
