"""Placeholders for spec files that failed to load, so that one bad file hides nothing else."""

import dagster as dg

from assets.keys import INVALID_SPECS_GROUP, invalid_spec_key
from assets.metadata import invalid_spec_metadata
from ml_platform.spec.catalog import Catalog
from ml_platform.spec.errors import SpecError


def build_invalid_spec_asset(error: SpecError, index: int) -> dg.AssetsDefinition:
    """A visible asset that shows a spec file's errors and fails when materialized.

    Args:
        error: why the spec file failed to load.
        index: the error's position among the catalog's errors (keeps keys unique).

    Returns:
        The asset ``invalid_specs/<file stem>_<index>``.
    """

    @dg.asset(
        key=invalid_spec_key(error.path, index),
        group_name=INVALID_SPECS_GROUP,
        description=f"INVALID SPEC - fix it to build its assets.\n\n```\n{error}\n```",
        metadata=invalid_spec_metadata(error),
    )
    def invalid_spec() -> None:
        """Fail: the spec file must be fixed first."""
        raise dg.Failure(description=str(error))

    return invalid_spec


def build_invalid_spec_assets(catalog: Catalog) -> list[dg.AssetsDefinition]:
    """A placeholder asset per spec file of the catalog that failed to load.

    Args:
        catalog: the loaded specs, with their errors.

    Returns:
        The placeholders (none when every spec file is valid).
    """
    return [build_invalid_spec_asset(error, i) for i, error in enumerate(catalog.errors)]
