"""Evaluation plots: real PNG pictures per task, the champion overlaid, the threshold applied."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ml_platform.evaluation.plots import (
    DriftBar,
    Scored,
    as_markdown,
    drift_plot,
    evaluation_plots,
    learning_curve_plot,
    slice_plot,
)

RNG = np.random.default_rng(7)


def _image(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def _binary() -> tuple[np.ndarray, np.ndarray]:
    truth = RNG.integers(0, 2, 2_000)
    probability = np.clip(truth * 0.35 + RNG.uniform(0, 0.65, truth.size), 0, 1)
    return truth, probability


def test_binary_classification_gets_curves_matrix_calibration_and_scores() -> None:
    truth, probability = _binary()
    plots = evaluation_plots(
        "binary_classification",
        truth,
        Scored("v2 (challenger)", probability),
        threshold=0.4,
        champion=Scored("v1 (champion)", RNG.uniform(0, 1, truth.size)),
    )
    assert [p.name for p in plots] == [
        "roc",
        "precision_recall",
        "confusion_matrix",
        "calibration",
        "score_distribution",
    ]
    assert "threshold 0.4" in plots[2].title
    for plot in plots:
        image = _image(plot.png)
        assert image.format == "PNG"
        assert image.width >= 300 and image.height >= 250
        # A drawn picture, not a blank canvas: many distinct colours.
        assert len(image.convert("RGB").getcolors(maxcolors=100_000) or []) > 20


def test_the_confusion_matrix_changes_with_the_threshold() -> None:
    truth, probability = _binary()
    low, high = (
        evaluation_plots("binary_classification", truth, Scored("v", probability), threshold=t)[2]
        for t in (0.2, 0.8)
    )
    assert low.png != high.png


def test_multiclass_and_regression_get_their_own_plots() -> None:
    truth = RNG.integers(0, 3, 600)
    probabilities = RNG.dirichlet(np.ones(3), truth.size)
    multiclass = evaluation_plots("multiclass_classification", truth, Scored("v", probabilities))
    assert [p.name for p in multiclass] == ["confusion_matrix", "recall_per_class"]
    values = RNG.normal(size=800)
    regression = evaluation_plots(
        "regression", values, Scored("v", values + RNG.normal(0, 0.1, values.size))
    )
    assert [p.name for p in regression] == ["predicted_vs_actual", "residuals"]
    for plot in [*multiclass, *regression]:
        assert _image(plot.png).format == "PNG"


def test_slice_bars_and_learning_curve() -> None:
    slices = {"country": {"NG": {"roc_auc": 0.81}, "KE": {"roc_auc": 0.77}}}
    plot = slice_plot(slices, "roc_auc", champion_slices={"country": {"NG": {"roc_auc": 0.8}}})
    assert plot is not None and _image(plot.png).format == "PNG"
    assert slice_plot(slices, "rmse") is None
    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "val_roc_auc": 0.6 + e / 100}
        for e in range(1, 6)
    ]
    curve = learning_curve_plot(history, "roc_auc")
    assert curve is not None and _image(curve.png).format == "PNG"
    assert learning_curve_plot([], "roc_auc") is None


@pytest.mark.parametrize("count", [1, 3])
def test_markdown_embeds_every_plot_as_a_data_uri(count: int) -> None:
    truth, probability = _binary()
    plots = evaluation_plots("binary_classification", truth, Scored("v", probability))[:count]
    text = as_markdown(plots)
    assert text.count("](data:image/png;base64,") == count
    assert all(f"**{p.title}**" in text for p in plots)


def test_drift_bars_are_relative_to_each_tests_threshold() -> None:
    distance = DriftBar("amount", "wasserstein", 0.3, 0.1, "distance", drifted=True)
    p_value = DriftBar("channel", "chisquare", 0.01, 0.05, "p_value", drifted=True)
    calm = DriftBar("hour", "ks", 0.5, 0.05, "p_value", drifted=False)
    assert distance.ratio == pytest.approx(3.0)
    assert p_value.ratio == pytest.approx(5.0)
    assert calm.ratio < 1
    assert DriftBar("x", "ks", 0.0, 0.05, "p_value", drifted=True).ratio == float("inf")
    plot = drift_plot([distance, p_value, calm])
    assert plot is not None and plot.name == "drift_scores"
    assert _image(plot.png).format == "PNG"
    assert drift_plot([]) is None
