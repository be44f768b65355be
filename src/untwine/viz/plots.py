"""Training curves from `log.jsonl` records, metric matrices as heatmaps and downstream accuracy curves, drawn
with matplotlib's Agg renderer (no display, no pyplot state)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

QUANTITIES = ("loss", "reconstruction_loss", "kl_loss", "regularizer", "elbo")


def _series(records: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the records that hold a finite number under `key`."""
    steps, values = [], []
    for record in records:
        value, step = record.get(key), record.get("step")
        if isinstance(value, (int, float)) and isinstance(step, (int, float)) and math.isfinite(value):
            steps.append(step)
            values.append(value)
    return steps, values


def training_curves(log_records: Sequence[dict], quantities: Sequence[str] = QUANTITIES) -> bytes:
    """PNG bytes: one small panel per logged quantity (loss, reconstruction_loss, kl_loss, regularizer, elbo —
    whichever are present) against the training step."""
    panels = [(key, *_series(log_records, key)) for key in quantities]
    panels = [p for p in panels if p[1]]
    cols = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig = Figure(figsize=(4.0 * cols, 2.8 * rows), dpi=100, layout="constrained")
    if not panels:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no training log records", ha="center", va="center", color="0.4")
        ax.set_axis_off()
    for i, (key, steps, values) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot(steps, values, color="#1f5fa8", linewidth=1.2, marker="." if len(steps) < 30 else None)
        ax.set_title(key.replace("_", " "), fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, color="0.9")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    return _png(fig)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def heatmap(
    matrix,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    value_label: str,
    vmax: float | None = None,
) -> bytes:
    """PNG bytes: a d x K matrix (latents x factors) as a heatmap, each cell annotated with its value (2 decimals).

    Colours run from 0 (white) to `vmax` (default: the matrix maximum); the matrix is drawn exactly as given."""
    m = np.asarray(matrix, dtype=np.float64)
    rows, cols = m.shape
    top = float(vmax if vmax is not None else (m.max() if m.size and m.max() > 0 else 1.0))
    fig = Figure(figsize=(min(4.9, 1.4 + 0.7 * cols), 1.1 + 0.3 * rows), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=top, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(cols), [str(c) for c in col_labels], fontsize=8, rotation=30, ha="right")
    ax.set_yticks(range(rows), [str(r) for r in row_labels], fontsize=8)
    ax.set_title(title, fontsize=10)
    for i in range(rows):
        for k in range(cols):
            ax.text(
                k,
                i,
                f"{m[i, k]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if m[i, k] > 0.6 * top else "#1d2330",
            )
    fig.colorbar(image, ax=ax, label=value_label, shrink=0.9)
    return _png(fig)


def accuracy_by_size(panels: Sequence[tuple[str, Sequence[int], Sequence[str], Sequence[Sequence[float]]]]) -> bytes:
    """PNG bytes: per panel (title, training sizes [S], factor names [K], test accuracy [K][S]) one line per factor
    of test accuracy against the training-set size (log scale), with the mean over factors in black."""
    cols = min(2, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig = Figure(figsize=(5.1 * cols, 3.2 * rows), dpi=100, layout="constrained")
    for i, (title, sizes, names, accuracy) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        acc = np.asarray(accuracy, dtype=np.float64)
        for name, line in zip(names, acc):
            ax.plot(sizes, line, marker="o", markersize=3, linewidth=1.2, label=str(name))
        ax.plot(sizes, acc.mean(axis=0), color="black", linewidth=2.0, linestyle="--", label="mean")
        ax.set_xscale("log")
        ax.set_xticks(list(sizes), [f"{s:,}" for s in sizes])
        ax.set_ylim(0.0, 1.02)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training points", fontsize=8)
        ax.set_ylabel("test accuracy", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, color="0.9")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _png(fig)
