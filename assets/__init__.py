"""Thin Dagster wiring built from the specs: a builder module per asset kind, names, metadata.

``keys`` names everything; ``metadata`` renders what the catalog shows; ``sources``,
``feature_views``, ``models`` and ``invalid_specs`` build the assets; ``jobs`` and ``promotion``
the jobs. The spec files of the bundled examples live in the subfolders.
"""
