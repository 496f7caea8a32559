"""The data scientist's day in the real UI: `dagster dev` and the MLflow UI on free localhost
ports, an isolated ML_PLATFORM_HOME, and Debian's headless Chromium driven by Playwright.

From the lineage the model is launched with its upstream by clicking "Materialize all"; the run
is followed to success on its page; the evaluation asset shows its plots (rendered images) and
its threshold; the model asset links to the MLflow UI, whose page for the new version opens.
Screenshots of every page are kept (the test prints where).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ml_platform.core.settings import PlatformSettings
from ml_platform.lifecycle.records import current_evaluation
from ml_platform.registry.client import ModelRegistry
from tests.e2e import loans
from tests.e2e.ui_browser import Screenshots, chromium_page, require_browser
from tests.e2e.ui_servers import dagster_and_mlflow

# A few boosting rounds: the test is about the UI, not the model.
SMALL_XGBOOST = {"flavor": "xgboost", "params": {"n_estimators": 20, "max_depth": 3}}
# features/bureau, then the model's training_set, model, evaluation and champion.
MODEL_WITH_UPSTREAM = f'+key:"{loans.MODEL}/champion"'
MATERIALIZE_FIVE = re.compile(r"Materialize all \(5\)$")  # after its icon's name
RUN_FINISHED = re.compile(r"^(Success|Failure|Canceled)$")
RUN_TIMEOUT_MS = 400_000  # CI machines are slow and shared; this only bounds a hung run
PLOTS = {"roc", "precision_recall", "confusion_matrix", "calibration", "score_distribution"}


@pytest.mark.slow
def test_launch_the_model_from_the_lineage_and_inspect_it(
    platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_browser()
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    specs = loans.write_specs(tmp_path / "specs", model=SMALL_XGBOOST)
    monkeypatch.setenv("ML_PLATFORM_SPEC_PATH", str(specs))
    settings = PlatformSettings.from_env()
    loans.write_frames(settings, loans.good_frames())
    shots = Screenshots(tmp_path / "screenshots")
    servers = dagster_and_mlflow(settings, dict(os.environ), tmp_path, f"{loans.MODEL}/champion")

    with (
        servers as (dagster_url, mlflow_url),
        chromium_page(tmp_path / "profile") as page,
        shots.on_failure(page),
    ):
        # Dagster's first-visit newsletter dialog covers whatever page it shows up on.
        page.add_locator_handler(
            page.get_by_text("Join the Dagster community"),
            lambda: page.get_by_role("button", name="Skip").click(),
        )
        page.goto(f"{dagster_url}/locations/ml_platform.definitions/asset-groups/{loans.MODEL}")
        expect(page.get_by_text("evaluation", exact=True).first).to_be_visible()
        shots.take(page, "model_group_lineage")

        # The lineage filtered to the model with everything upstream, launched with one click.
        page.get_by_role("link", name=re.compile(r"Lineage$")).click()
        page.locator(".CodeMirror").first.click()  # the asset selection editor
        page.keyboard.type(MODEL_WITH_UPSTREAM)
        page.keyboard.press("Enter")
        materialize = page.get_by_role("button", name=MATERIALIZE_FIVE)
        expect(materialize).to_be_visible()
        shots.take(page, "model_with_upstream")
        materialize.click()
        expect(page.get_by_text(re.compile(r"^Launched run "))).to_be_visible()
        page.get_by_text("View", exact=True).click()  # the toast's link to the run
        page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
        run_id = page.url.rsplit("/", 1)[1]
        status = page.get_by_text(RUN_FINISHED).first
        expect(status).to_be_visible(timeout=RUN_TIMEOUT_MS)
        shots.take(page, "run")
        assert status.inner_text() == "Success", page.inner_text("body")[-4000:]

        # The evaluation: its threshold in the metadata table, its plots rendered as images.
        threshold = current_evaluation(settings, loans.MODEL).threshold
        assert threshold is not None
        page.goto(f"{dagster_url}/assets/{loans.MODEL}/evaluation")
        row = page.get_by_role("row").filter(has=page.get_by_text("threshold", exact=True))
        expect(row).to_have_count(1)
        shown = float(row.get_by_role("cell").last.inner_text())
        assert shown == pytest.approx(threshold, rel=1e-3)
        shots.take(page, "evaluation")
        plots_row = page.get_by_role("row").filter(has=page.get_by_text("plots", exact=True))
        plots_row.get_by_text("[Show Markdown]").click()
        dialog = page.get_by_role("dialog")
        images = dialog.locator("img")
        expect(images.first).to_be_visible()
        for image in images.all():
            image.scroll_into_view_if_needed()
            expect(image).to_have_js_property("complete", True)
        rendered = {
            image.get_attribute("alt"): image.evaluate("img => img.naturalWidth")
            for image in images.all()
        }
        assert set(rendered) >= PLOTS, rendered
        assert all(width > 0 for width in rendered.values()), rendered
        shots.take(page, "evaluation_plots")
        dialog.get_by_role("button", name="Close").click()

        # The model links to its MLflow run in this MLflow UI.
        page.goto(f"{dagster_url}/assets/{loans.MODEL}/model")
        run_link = page.locator(f'a[href^="{mlflow_url}/#/experiments/"]').first
        expect(run_link).to_be_visible()
        shots.take(page, "model")

        # MLflow's page for the new version, registered by the run launched above.
        version = ModelRegistry.for_settings(settings).champion_version(loans.MODEL)
        assert version == "1"
        page.goto(f"{mlflow_url}/#/models/{loans.MODEL}/versions/{version}")
        expect(page.get_by_text(f"Version {version}", exact=True).first).to_be_visible()
        # Its source run is named after the Dagster run (see ModelRegistry.start_training_run).
        expect(page.get_by_text(f"{loans.MODEL}-{run_id[:8]}").first).to_be_visible()
        shots.take(page, "mlflow_version")
