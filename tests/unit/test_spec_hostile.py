"""One bad spec hides no other model: every field of a valid spec, set to hostile values.

Each mutation of the fraud example's model spec is either reported by validation with the field
it names, or the code location still loads with both that model and another one (the lending
model of ``tests/e2e/loans.py``). The YAML itself is attacked too (duplicate keys, unset
variables), and the cron check is held to Dagster's own.
"""

from __future__ import annotations

import copy
import math
import random
import shutil
from pathlib import Path
from typing import Any, get_origin

import dagster as dg
import pytest
import yaml
from dagster._utils.schedules import is_valid_cron_string
from pydantic import BaseModel

from ml_platform.cli.main import main as cli_main
from ml_platform.definitions import build_definitions
from ml_platform.spec.errors import SpecError
from ml_platform.spec.loading import load_catalog, read_spec_file
from ml_platform.spec.model import ModelSpec
from ml_platform.spec.values import cron_problem
from ml_platform.training.flavors.params import MLPParams
from tests.e2e import loans

EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "fraud_detection"
BASE_SPEC: dict[str, Any] = yaml.safe_load((EXAMPLE / "model.yaml").read_text())
MUTATED = "fraud_detection"

HOSTILE_VALUES: dict[str, Any] = {
    "null": None,
    "empty_string": "",
    "zero": 0,
    "negative": -3,
    "nan": math.nan,
    "inf": math.inf,
    "huge": 10**30,
    "true": True,
    "unknown_word": "hostile_value",
    "empty_list": [],
    "empty_mapping": {},
    "negative_list": [-4],
    "bad_cron": "99 99 * * *",
    "bad_timezone": "Mars/Olympus",
    "zero_duration": "0d",
    "huge_duration": "99999999999d",
}


def _sections(annotation: Any) -> type[BaseModel] | None:
    """The spec section an annotation holds directly (``X`` or ``X | None``), else None."""
    if get_origin(annotation) in (list, dict):
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]
    return None


def _field_paths(section: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field of a spec section, sections and their fields alike, as dotted paths."""
    paths = []
    for name, info in section.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        inner = _sections(info.annotation)
        if inner is not None:
            paths += _field_paths(inner, f"{path}.")
    return paths


FIELDS = [
    *_field_paths(ModelSpec),
    *(f"model.params.{name}" for name in MLPParams.model_fields),
]
MUTATIONS = [(field, value) for field in FIELDS for value in HOSTILE_VALUES]


def _mutated(field: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE_SPEC)
    *parents, leaf = field.split(".")
    section = spec
    for part in parents:
        section = section.setdefault(part, {})
    section[leaf] = value
    return spec


def _write(directory: Path, spec: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE / "features.yaml", directory / "features.yaml")
    path = directory / "model.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _names_field(problem: str, field: str) -> bool:
    """A problem names a field by its path, or by its section's path and its own name."""
    parent, _, leaf = field.rpartition(".")
    return field in problem or (bool(parent) and parent in problem and leaf in problem)


@pytest.mark.parametrize(
    ("field", "value"),
    [pytest.param(f, HOSTILE_VALUES[v], id=f"{f}={v}") for f, v in MUTATIONS],
)
def test_a_hostile_field_is_reported_or_hides_no_model(
    field: str, value: Any, platform_home: Path, tmp_path: Path
) -> None:
    model_path = _write(tmp_path / "mutated", _mutated(field, value))
    catalog = load_catalog([model_path.parent / "features.yaml", model_path])
    errors = [e for e in catalog.errors if Path(e.path) == model_path]
    if errors:
        problems = [p for e in errors for p in e.problems]
        assert any(_names_field(p, field) for p in problems), problems
        return
    loans.write_specs(tmp_path / "other")
    spec_path = f"{tmp_path / 'mutated'}:{tmp_path / 'other'}"
    defs = build_definitions(tmp_path / "project", spec_path=spec_path)
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    (mutated,) = catalog.models  # the name itself may be the field set
    assert {f"{mutated}/model", f"{loans.MODEL}/model"} <= keys
    defs.get_repository_def().get_all_jobs()


def test_a_rejected_spec_becomes_a_placeholder_beside_the_other_model(
    platform_home: Path, tmp_path: Path
) -> None:
    _write(tmp_path / "mutated", _mutated("retraining.timezone", "Mars/Olympus"))
    loans.write_specs(tmp_path / "other")
    spec_path = f"{tmp_path / 'mutated'}:{tmp_path / 'other'}"
    defs = build_definitions(tmp_path / "project", spec_path=spec_path)
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert f"{loans.MODEL}/model" in keys and f"{MUTATED}/model" not in keys
    assert any(key.startswith("invalid_specs/") for key in keys)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("retraining.schedule", "99 99 * * *"),
        ("monitoring.schedule", "0 0 30 2 *"),
        ("scoring.schedule", "*/0 * * * *"),
        ("retraining.timezone", "Mars/Olympus"),
        ("monitoring.timezone", ""),
        ("scoring.timezone", "../etc/passwd"),
        ("training.positive_class_weight", -3),
        ("training.positive_class_weight", math.nan),
        ("model.params.hidden_sizes", [-4]),
        ("model.params.dropout", 2.0),
        ("scoring.window", "0d"),
        ("monitoring.window", "0h"),
        ("monitoring.cooldown", "99999999999d"),
    ],
)
def test_the_cli_reports_what_took_down_the_code_location(
    field: str,
    value: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # no project specs beside the ones under test
    model_path = _write(tmp_path / "specs", _mutated(field, value))
    assert cli_main(["validate", str(model_path.parent)]) == 1
    error = capsys.readouterr().err
    assert f"spec '{model_path}' is invalid" in error
    assert f"  - {field}" in error


def test_a_duplicate_key_is_reported_with_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    text = (EXAMPLE / "model.yaml").read_text()
    path.write_text(text.replace("  epochs: 12\n", "  epochs: 12\n  epochs: 1200\n"))
    with pytest.raises(SpecError) as raised:
        read_spec_file(path)
    line = text.splitlines().index("  epochs: 12") + 1
    assert f"key 'epochs' on line {line + 1} is already set on line {line}" in str(raised.value)


def test_keys_repeated_in_different_mappings_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(BASE_SPEC))  # "schedule" and "min" appear in several sections
    assert isinstance(read_spec_file(path), ModelSpec)


def test_an_unset_variable_is_reported_with_its_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRAUD_OWNER", raising=False)
    monkeypatch.delenv("FRAUD_EPOCHS", raising=False)
    text = (EXAMPLE / "model.yaml").read_text()
    text = text.replace("owner: risk-ml@example.com", "owner: ${FRAUD_OWNER}")
    text = text.replace("epochs: 12", "epochs: ${FRAUD_EPOCHS}")
    path = tmp_path / "model.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as raised:
        read_spec_file(path)
    assert raised.value.problems == [
        "owner: environment variable 'FRAUD_OWNER' is not set "
        "(set it, or give a default: '${FRAUD_OWNER:-value}')",
        "training.epochs: environment variable 'FRAUD_EPOCHS' is not set "
        "(set it, or give a default: '${FRAUD_EPOCHS:-value}')",
    ]
    monkeypatch.setenv("FRAUD_EPOCHS", "3")
    path.write_text(text.replace("${FRAUD_OWNER}", "${FRAUD_OWNER:-risk@example.com}"))
    spec = read_spec_file(path)
    assert isinstance(spec, ModelSpec)
    assert (spec.owner, spec.training.epochs) == ("risk@example.com", 3)


def _cron_corpus(count: int) -> list[str]:
    """Crons of plausible parts (most of them valid somewhere) and of hostile ones."""
    plausible = ("*", "?", "*/5", "0", "1", "2", "7", "23", "1-5", "5-1", "1-10/3", "3/15", "1,2")
    plausible += ("mon", "MON", "mon-fri", "fri-mon", "sun", "jan", "feb", "dec", "30", "31")
    hostile = ("*/0", "24", "59", "60", "99", "-1", "0-7", "L", "5#2", "a", "1-", "*/", "@daily")
    rng = random.Random(7)
    return [
        " ".join(
            rng.choice(plausible if rng.random() < 0.9 else hostile)
            for _ in range(rng.choice((4, 5, 5, 5, 5, 6)))
        )
        for _ in range(count)
    ]


def test_every_cron_the_spec_accepts_dagster_schedules() -> None:
    corpus = _cron_corpus(5000)
    accepted = [c for c in corpus if cron_problem(c) is None]
    assert len(accepted) > 100  # the corpus exercises the accepting side too
    assert [c for c in accepted if not is_valid_cron_string(c)] == []
    # Where the spec is stricter than Dagster, it is about forms it chose not to read.
    stricter = {c for c in corpus if cron_problem(c) is not None and is_valid_cron_string(c)}
    assert all({"l", "#"} & set(c.lower()) for c in stricter), sorted(stricter)[:10]


@pytest.mark.parametrize(
    "cron", ["0 3 * * 1", "*/15 * * * *", "0 9 1-7 * mon", "0 0 29 2 *", "0 22 * * fri-mon"]
)
def test_common_crons_are_accepted(cron: str) -> None:
    assert cron_problem(cron) is None
    dg.ScheduleDefinition(name="check", job_name="job", cron_schedule=cron)
