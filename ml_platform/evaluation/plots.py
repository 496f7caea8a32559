"""Pictures of a model's quality, rendered as PNG: curves, confusion matrix, calibration, slices.

Every plot is drawn on a ``matplotlib.figure.Figure`` (no pyplot: no global state, safe in threads
and in a headless pod) and returned as PNG bytes, so the same picture is logged to MLflow with the
training run and shown in the Dagster UI (``as_markdown`` embeds it as a data URI). matplotlib and
scikit-learn are imported when a plot is drawn.

Which plots a task gets:

- binary classification: ROC and precision-recall curves (the champion's on the same rows
  overlaid), the confusion matrix at the spec's threshold, a calibration (reliability) diagram and
  the score distribution by class;
- multiclass classification: the confusion matrix (argmax) and recall per class;
- regression: predicted against actual, and the residuals' distribution.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml_platform.core.tasks import Task, higher_is_better

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_DPI = 80
_SIZE = (5.0, 4.0)
_MAX_POINTS = 5_000
"""Scatter plots draw at most this many points (a fixed, seeded sample)."""

CHALLENGER_COLOR = "#1f77b4"
CHAMPION_COLOR = "#7f7f7f"


@dataclass(frozen=True)
class Plot:
    """One rendered picture.

    Attributes:
        name: A file stem, unique per evaluation (``roc``, ``confusion_matrix``...).
        title: What the picture shows, in words.
        png: The picture, PNG-encoded.
    """

    name: str
    title: str
    png: bytes


@dataclass(frozen=True)
class Scored:
    """One version's predictions on the evaluated rows.

    Attributes:
        label: How the legend names it, e.g. ``v7 (challenger)``.
        prediction: Probabilities of class 1 (binary), per class (multiclass) or values.
    """

    label: str
    prediction: np.ndarray


def evaluation_plots(
    task: Task,
    truth: np.ndarray,
    challenger: Scored,
    *,
    threshold: float = 0.5,
    champion: Scored | None = None,
) -> list[Plot]:
    """The plots of one evaluation: the task's curves and matrices on the test rows.

    Args:
        task: The model's task.
        truth: The encoded truth (0/1, class index or value), one per row.
        challenger: The evaluated version's predictions.
        threshold: The decision threshold (binary classification): the confusion matrix uses it.
        champion: The champion's predictions on the same rows, overlaid where comparable.

    Returns:
        The plots, in reading order.
    """
    if task == "binary_classification":
        return _binary_plots(truth, challenger, threshold, champion)
    if task == "multiclass_classification":
        return _multiclass_plots(truth, challenger)
    return _regression_plots(truth, challenger, champion)


def slice_plot(
    slices: Mapping[str, Mapping[str, Mapping[str, float]]],
    metric: str,
    champion_slices: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
) -> Plot | None:
    """One bar per slice value of ``metric``, the champion's beside it when known.

    Args:
        slices: Column -> value -> metrics, as ``evaluation.slices.slice_metrics`` returns.
        metric: The metric drawn (the spec's primary metric).
        champion_slices: The champion's slice metrics on the same rows.

    Returns:
        The plot, or None when no slice has the metric.
    """
    bars = [
        (f"{column}={value}", metrics[metric], (champion_slices or {}).get(column, {}).get(value))
        for column, values in slices.items()
        for value, metrics in values.items()
        if metric in metrics
    ]
    if not bars:
        return None
    figure, axes = _figure(size=(6.0, max(2.5, 0.35 * len(bars) + 1.2)))
    positions = list(range(len(bars)))
    height = 0.4 if champion_slices else 0.7
    axes.barh(positions, [b[1] for b in bars], height=height, color=CHALLENGER_COLOR)
    if champion_slices:
        champion_values = [(b[2] or {}).get(metric, float("nan")) for b in bars]
        axes.barh(
            [p + height for p in positions],
            champion_values,
            height=height,
            color=CHAMPION_COLOR,
            label="champion",
        )
        axes.legend(loc="lower right", fontsize=8)
    axes.set_yticks([p + (height / 2 if champion_slices else 0) for p in positions])
    axes.set_yticklabels([b[0] for b in bars], fontsize=8)
    axes.invert_yaxis()
    direction = "higher" if higher_is_better(metric) else "lower"
    axes.set_xlabel(f"{metric} ({direction} is better)")
    return _render(figure, "slices", f"{metric} per slice")


def learning_curve_plot(history: Sequence[Mapping[str, Any]], metric: str | None) -> Plot | None:
    """Training and validation loss per epoch, and the primary metric on a second axis.

    Args:
        history: One mapping per epoch with ``epoch``, ``train_loss``, ``val_loss`` and, when the
            trainer measured it, ``val_<metric>``.
        metric: The primary metric to draw, if the history has it.

    Returns:
        The plot, or None for an empty history.
    """
    if not history:
        return None
    epochs = [int(row["epoch"]) for row in history]
    figure, axes = _figure()
    for key, style in (("train_loss", "--"), ("val_loss", "-")):
        values = [_value(row.get(key)) for row in history]
        if any(v == v for v in values):
            axes.plot(epochs, values, style, label=key.replace("_", " "))
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    key = f"val_{metric}" if metric else None
    if key and any(key in row for row in history):
        other = axes.twinx()
        # XGBoost measures the metric on some rounds only: draw the rounds that have it.
        measured = [(e, _value(row.get(key))) for e, row in zip(epochs, history, strict=True)]
        measured = [(e, v) for e, v in measured if v == v]
        other.plot(
            [e for e, _ in measured],
            [v for _, v in measured],
            "o-",
            markersize=3,
            color="#d62728",
            label=key,
        )
        other.set_ylabel(f"validation {metric}")
        other.legend(loc="upper right", fontsize=8)
    axes.legend(loc="upper left", fontsize=8)
    return _render(figure, "learning_curve", "loss and primary metric per epoch")


def _value(value: Any) -> float:
    """A history value as a float; absent is NaN, which matplotlib leaves as a gap."""
    return float("nan") if value is None else float(value)


@dataclass(frozen=True)
class DriftBar:
    """One column's drift test, for ``drift_plot``.

    Attributes:
        column: The input column, or ``prediction``.
        test: The test's name (``wasserstein``, ``psi``, ``ks``...).
        score: The test's score: a distance (large means drift) or a p-value (small means drift).
        threshold: The threshold the score was compared with.
        measures: ``distance`` or ``p_value``.
        drifted: The test's verdict.
    """

    column: str
    test: str
    score: float
    threshold: float
    measures: str
    drifted: bool

    @property
    def ratio(self) -> float:
        """How far past its threshold the column is: 1 at the threshold, more means drift."""
        if self.measures == "distance":
            return self.score / self.threshold if self.threshold > 0 else float("inf")
        return self.threshold / self.score if self.score > 0 else float("inf")


_MAX_RATIO = 1_000.0
"""Drift ratios are drawn up to this (a p-value of 0 is infinitely past its threshold)."""


def drift_plot(bars: Sequence[DriftBar]) -> Plot | None:
    """Each column's drift relative to its own test's threshold, drifted columns in red.

    Tests measure on different scales (a distance must reach its threshold, a p-value fall
    below it), so each bar is the score over the threshold (for p-values, the threshold over the
    score): 1 is the threshold, and a bar past it drifted.

    Args:
        bars: One per judged column (and the prediction).

    Returns:
        The plot, or None with no column to draw.
    """
    if not bars:
        return None
    figure, axes = _figure(size=(6.0, max(2.5, 0.3 * len(bars) + 1.2)))
    ratios = [min(max(bar.ratio, 1 / _MAX_RATIO), _MAX_RATIO) for bar in bars]
    colors = ["#d62728" if bar.drifted else CHALLENGER_COLOR for bar in bars]
    positions = list(range(len(bars)))
    axes.barh(positions, ratios, color=colors)
    axes.axvline(1.0, color="black", linestyle="--", linewidth=1, label="threshold")
    axes.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    low, high = axes.get_xlim()
    axes.set_xticks([t for t in (0.001, 0.01, 0.1, 0.3, 1, 3, 10, 100, 1000) if low <= t <= high])
    axes.set_yticks(positions)
    axes.set_yticklabels([f"{bar.column} ({bar.test} {bar.score:.3g})" for bar in bars], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("score relative to its threshold (past 1 = drifted)")
    axes.legend(loc="lower right", fontsize=8)
    return _render(figure, "drift_scores", "drift per column, relative to each test's threshold")


def as_markdown(plots: Sequence[Plot]) -> str:
    """The plots as Markdown images with data URIs, for a Dagster ``MetadataValue.md``."""
    return "\n\n".join(
        f"**{plot.title}**\n\n![{plot.name}](data:image/png;base64,"
        f"{base64.b64encode(plot.png).decode('ascii')})"
        for plot in plots
    )


def _figure(size: tuple[float, float] = _SIZE) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=_DPI, layout="tight")
    return figure, figure.add_subplot()


def _render(figure: Figure, name: str, title: str) -> Plot:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return Plot(name=name, title=title, png=buffer.getvalue())


def _binary_plots(
    truth: np.ndarray, challenger: Scored, threshold: float, champion: Scored | None
) -> list[Plot]:
    import numpy as np
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    scored = [challenger, *([champion] if champion is not None else [])]
    colors = [CHALLENGER_COLOR, CHAMPION_COLOR]
    roc, roc_axes = _figure()
    pr, pr_axes = _figure()
    for which, color in zip(scored, colors, strict=False):
        fpr, tpr, _ = roc_curve(truth, which.prediction)
        roc_axes.plot(fpr, tpr, color=color, label=f"{which.label} (AUC {auc(fpr, tpr):.3f})")
        precision, recall, _ = precision_recall_curve(truth, which.prediction)
        pr_axes.plot(recall, precision, color=color, label=which.label)
    roc_axes.plot([0, 1], [0, 1], ":", color="#bbbbbb")
    roc_axes.set_xlabel("false positive rate")
    roc_axes.set_ylabel("true positive rate")
    roc_axes.legend(loc="lower right", fontsize=8)
    pr_axes.axhline(float(np.mean(truth)), linestyle=":", color="#bbbbbb", label="base rate")
    pr_axes.set_xlabel("recall")
    pr_axes.set_ylabel("precision")
    pr_axes.legend(loc="upper right", fontsize=8)
    predicted = (challenger.prediction >= threshold).astype(int)
    matrix = np.zeros((2, 2), dtype=int)
    np.add.at(matrix, (truth.astype(int), predicted), 1)
    return [
        _render(roc, "roc", "ROC curve on the test rows"),
        _render(pr, "precision_recall", "precision-recall curve on the test rows"),
        _confusion(matrix, ["0", "1"], f"confusion matrix at threshold {threshold:g}"),
        _calibration(truth, challenger.prediction),
        _score_distribution(truth, challenger.prediction, threshold),
    ]


def _confusion(matrix: np.ndarray, classes: Sequence[str], title: str) -> Plot:
    figure, axes = _figure()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    peak = matrix.max() if matrix.size else 0
    for (row, column), count in _cells(matrix):
        color = "white" if count > peak / 2 else "black"
        axes.text(column, row, f"{count:,}", ha="center", va="center", color=color, fontsize=9)
    axes.set_xticks(range(len(classes)))
    axes.set_xticklabels(classes)
    axes.set_yticks(range(len(classes)))
    axes.set_yticklabels(classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    return _render(figure, "confusion_matrix", title)


def _cells(matrix: np.ndarray) -> list[tuple[tuple[int, int], int]]:
    rows, columns = matrix.shape
    return [((r, c), int(matrix[r, c])) for r in range(rows) for c in range(columns)]


def _calibration(truth: np.ndarray, probability: np.ndarray, bins: int = 10) -> Plot:
    import numpy as np

    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    occupied = counts > 0
    predicted = np.bincount(which, weights=probability, minlength=bins)[occupied] / counts[occupied]
    observed = np.bincount(which, weights=truth, minlength=bins)[occupied] / counts[occupied]
    figure, axes = _figure()
    axes.plot([0, 1], [0, 1], ":", color="#bbbbbb", label="perfectly calibrated")
    axes.plot(predicted, observed, "o-", color=CHALLENGER_COLOR, label="model")
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("observed rate of class 1")
    axes.legend(loc="upper left", fontsize=8)
    return _render(figure, "calibration", "calibration (reliability) diagram, 10 bins")


def _score_distribution(truth: np.ndarray, probability: np.ndarray, threshold: float) -> Plot:
    figure, axes = _figure()
    for label, color in ((0, CHAMPION_COLOR), (1, CHALLENGER_COLOR)):
        axes.hist(
            probability[truth == label],
            bins=40,
            range=(0.0, 1.0),
            density=True,
            alpha=0.6,
            color=color,
            label=f"class {label}",
        )
    axes.axvline(threshold, color="#d62728", linestyle="--", label=f"threshold {threshold:g}")
    axes.set_xlabel("predicted probability of class 1")
    axes.set_ylabel("density")
    axes.legend(loc="upper center", fontsize=8)
    return _render(figure, "score_distribution", "score distribution by class")


def _multiclass_plots(truth: np.ndarray, challenger: Scored) -> list[Plot]:
    import numpy as np

    classes = challenger.prediction.shape[1]
    predicted = challenger.prediction.argmax(axis=1)
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (truth.astype(int), predicted), 1)
    names = [str(i) for i in range(classes)]
    support = matrix.sum(axis=1)
    recall = np.divide(np.diag(matrix), support, out=np.zeros(classes), where=support > 0)
    figure, axes = _figure()
    axes.bar(names, recall, color=CHALLENGER_COLOR)
    axes.set_ylim(0, 1)
    axes.set_xlabel("class")
    axes.set_ylabel("recall")
    return [
        _confusion(matrix, names, "confusion matrix (most probable class)"),
        _render(figure, "recall_per_class", "recall per class"),
    ]


def _regression_plots(truth: np.ndarray, challenger: Scored, champion: Scored | None) -> list[Plot]:
    import numpy as np

    rows = np.random.default_rng(0).permutation(len(truth))[:_MAX_POINTS]
    scatter, axes = _figure()
    for which, color in ((challenger, CHALLENGER_COLOR), (champion, CHAMPION_COLOR)):
        if which is not None:
            axes.scatter(
                truth[rows], which.prediction[rows], s=4, alpha=0.4, color=color, label=which.label
            )
    low, high = float(np.min(truth)), float(np.max(truth))
    axes.plot([low, high], [low, high], ":", color="#bbbbbb")
    axes.set_xlabel("actual")
    axes.set_ylabel("predicted")
    axes.legend(loc="upper left", fontsize=8)
    residuals, residual_axes = _figure()
    residual_axes.hist(challenger.prediction - truth, bins=50, color=CHALLENGER_COLOR)
    residual_axes.axvline(0.0, color="#d62728", linestyle="--")
    residual_axes.set_xlabel("predicted - actual")
    residual_axes.set_ylabel("rows")
    return [
        _render(scatter, "predicted_vs_actual", "predicted against actual"),
        _render(residuals, "residuals", "distribution of residuals"),
    ]
