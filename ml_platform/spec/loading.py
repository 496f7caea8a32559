"""Finding and reading spec files into a catalog, collecting every file's errors.

Specs are discovered from ``assets/**/*.yaml`` and every directory listed in
``ML_PLATFORM_SPEC_PATH`` (``os.pathsep``-separated). This runs when Dagster loads the code
location: it imports only pydantic, yaml and the spec modules (no pandas, Feast, torch or MLflow).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import ValidationError

from ml_platform.spec.catalog import Catalog, resolve_model
from ml_platform.spec.errors import SpecError, format_validation_error
from ml_platform.spec.features import FeatureRepoSpec
from ml_platform.spec.model import ModelSpec
from ml_platform.spec.values import NAME_PATTERN as NAME_PATTERN  # for importers of the loader
from ml_platform.spec.values import load_yaml

SPEC_PATH_ENV = "ML_PLATFORM_SPEC_PATH"


def read_spec_file(path: str | Path) -> FeatureRepoSpec | ModelSpec | None:
    """Parse one YAML file (after ``${VAR}`` interpolation) into its spec.

    A key written twice in one mapping and a ``${VAR}`` that is unset and has no default are
    errors, each reported with its line or field.

    Args:
        path: the YAML file.

    Returns:
        The spec, or None when the file declares neither kind (any other YAML file).

    Raises:
        SpecError: the file declares a kind but is invalid (the message names field and fix).
    """
    path = Path(path)
    try:
        document, unset_variables = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(path, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(document, dict) or "kind" not in document:
        return None
    if unset_variables:
        raise SpecError(path, unset_variables)
    kind = document.get("kind")
    spec_class = {"model": ModelSpec, "features": FeatureRepoSpec}.get(str(kind))
    if spec_class is None:
        raise SpecError(path, [f"kind: unknown kind {kind!r}; use 'model' or 'features'"])
    try:
        spec = spec_class.model_validate(document)
    except ValidationError as exc:
        raise SpecError(path, format_validation_error(exc, spec_class)) from None
    return spec


def discover_spec_files(project_root: Path, extra_paths: str | None = None) -> list[Path]:
    """Find candidate YAML files under ``assets/`` and ``ML_PLATFORM_SPEC_PATH``.

    Args:
        project_root: the project directory whose ``assets/`` is searched.
        extra_paths: files or directories, ``os.pathsep``-separated (default: the
            ``ML_PLATFORM_SPEC_PATH`` environment variable).

    Returns:
        Resolved paths of ``*.yaml`` and ``*.yml`` files, each once, sorted per root.
    """
    roots = [project_root / "assets"]
    extra = os.environ.get(SPEC_PATH_ENV, "") if extra_paths is None else extra_paths
    roots += [Path(p) for p in extra.split(os.pathsep) if p.strip()]
    files: list[Path] = []
    for root in roots:
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files += sorted(p for p in root.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    return list(dict.fromkeys(p.resolve() for p in files))


def load_catalog(files: Iterable[Path]) -> Catalog:
    """Load every spec file; collect errors per file instead of stopping at the first.

    Feature repos are loaded first, then each model is resolved against them. A file that
    fails (invalid, or a name declared twice) is left out of the catalog and its error kept in
    ``Catalog.errors``.

    Args:
        files: the YAML files to read; files declaring no kind are ignored.

    Returns:
        The catalog of every valid spec, with the errors of the others.
    """
    catalog = Catalog()
    models: list[tuple[Path, ModelSpec]] = []
    for path in files:
        try:
            spec = read_spec_file(path)
        except SpecError as exc:
            catalog.errors.append(exc)
            continue
        if isinstance(spec, FeatureRepoSpec):
            _add_feature_repo(catalog, path, spec)
        elif isinstance(spec, ModelSpec):
            models.append((path, spec))
    _check_repos_disjoint(catalog)
    for path, spec in models:
        _add_model(catalog, path, spec)
    return catalog


def load_project(project_root: Path | None = None, extra_paths: str | None = None) -> Catalog:
    """Discover and load all specs of a project.

    Args:
        project_root: the project directory (default: the current directory).
        extra_paths: extra spec locations (default: ``ML_PLATFORM_SPEC_PATH``).

    Returns:
        The project's catalog.
    """
    root = Path.cwd() if project_root is None else project_root
    return load_catalog(discover_spec_files(root, extra_paths))


def _add_feature_repo(catalog: Catalog, path: Path, spec: FeatureRepoSpec) -> None:
    if spec.name in catalog.feature_repos:
        catalog.errors.append(_declared_twice(catalog, path, "feature repo", spec.name, "names"))
        return
    catalog.feature_repos[spec.name] = spec
    catalog.paths[spec.name] = path


def _add_model(catalog: Catalog, path: Path, spec: ModelSpec) -> None:
    if spec.name in catalog.models:
        catalog.errors.append(_declared_twice(catalog, path, "model", spec.name, "model names"))
        return
    try:
        resolved = resolve_model(spec, catalog)
    except ValueError as exc:
        catalog.errors.append(SpecError(path, str(exc).splitlines()))
        return
    catalog.models[spec.name] = spec
    catalog.resolved[spec.name] = resolved
    catalog.paths[spec.name] = path


def _declared_twice(catalog: Catalog, path: Path, kind: str, name: str, names: str) -> SpecError:
    first = catalog.paths[name]
    return SpecError(
        path, [f"name: {kind} '{name}' is also declared in '{first}'; {names} must be unique"]
    )


def _check_repos_disjoint(catalog: Catalog) -> None:
    """Drop each repo that reuses a source or view name of another (Feast names are global)."""
    seen: dict[tuple[str, str], str] = {}
    for repo_name, repo in list(catalog.feature_repos.items()):
        names = [("source", s.name) for s in repo.sources]
        names += [("feature view", v.name) for v in repo.feature_views]
        clash = next((n for n in names if n in seen), None)
        if clash:
            catalog.errors.append(
                SpecError(
                    catalog.paths[repo_name],
                    [
                        f"{clash[0]} '{clash[1]}' is also declared in feature repo "
                        f"'{seen[clash]}'; Feast names are global, rename one"
                    ],
                )
            )
            del catalog.feature_repos[repo_name]
            continue
        seen.update({n: repo_name for n in names})
