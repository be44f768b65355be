"""A study's analyses drawn and written: PNG figures (`S/figures/`), CSV tables (`S/tables/`) and one
self-contained HTML page (`S/report.html`), built from `study.analysis.run_all` on the study's frame.

The page shares the run report's style and helpers (`viz.report`): every image is embedded as a data URI, the CSS
is inline, nothing is fetched, and all text from the study is escaped.
"""

from __future__ import annotations

import html
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from untwine.study.analysis import METHOD_LABELS, Analysis, finished, run_all
from untwine.study.studydir import StudyDir
from untwine.training.checkpoint import atomic_write_text
from untwine.viz.report import CSS, _esc, _figure

COLORS = ("#1f5fa8", "#e0801f", "#2e9e4f", "#c7372f", "#7d5bb5", "#8c5a44", "#d36fb0", "#6b7485")
DPI = 90


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _png(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def _grid(
    rows: int,
    cols: int,
    width: float = 3.2,
    height: float = 2.6,
    title: bool = False,
    gap_w: float = 0.7,
    gap_h: float = 0.75,
) -> tuple[Figure, np.ndarray]:
    """rows x cols panels of width x height inches each (gaps included) with fixed margins in inches
    (constrained layout costs seconds per large grid)."""
    top = 0.3 + (0.35 if title else 0.0)
    fig_w, fig_h = width * cols + 0.3, height * rows + top
    fig = Figure(figsize=(fig_w, fig_h))
    axes = np.array(fig.subplots(rows, cols, squeeze=False))
    fig.subplots_adjust(
        left=gap_w / fig_w,
        right=1 - 0.3 / fig_w,
        bottom=gap_h / fig_h,
        top=1 - top / fig_h,
        wspace=gap_w / (width - gap_w),
        hspace=gap_h / (height - gap_h),
    )
    return fig, axes


def _boxes(ax, groups: list[tuple[str, np.ndarray]], colors=None) -> None:
    groups = [(name, values) for name, values in groups if len(values)]
    if not groups:
        ax.set_axis_off()
        return
    parts = ax.boxplot([v for _, v in groups], patch_artist=True, widths=0.6, flierprops={"markersize": 3})
    for i, box in enumerate(parts["boxes"]):
        box.set_facecolor((colors or COLORS)[i % len(colors or COLORS)])
        box.set_alpha(0.55)
    ax.set_xticks(range(1, len(groups) + 1), [name for name, _ in groups], rotation=35, ha="right", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(True, axis="y", color="0.9")


def _heatmaps(matrices: dict, path: Path, title: str) -> Path:
    items = list(matrices.items())
    cols = min(3, len(items))
    rows = math.ceil(len(items) / cols)
    size = max(max(m.shape) for m, _ in matrices.values())
    fig, axes = _grid(rows, cols, width=0.5 * size + 1.9, height=0.45 * size + 1.6, title=True, gap_w=1.6, gap_h=1.3)
    for ax in axes.flat[len(items) :]:
        ax.set_axis_off()
    for ax, (dataset, (matrix, count)) in zip(axes.flat, items):
        values = matrix.to_numpy(dtype=float)
        ax.imshow(values, vmin=-1, vmax=1, cmap="RdBu_r")
        for (i, j), value in np.ndenumerate(values):
            text = "" if math.isnan(value) else f"{100 * value:.0f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
        ax.set_xticks(range(values.shape[1]), matrix.columns, rotation=40, ha="right", fontsize=7)
        ax.set_yticks(range(values.shape[0]), matrix.index, fontsize=7)
        ax.set_title(f"{dataset} ({count} models)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _png(fig, path)


# --- one drawing function per analysis: (analysis, figures dir) -> [paths] ------------------------------------


def draw_tc(analysis: Analysis, out: Path) -> list[Path]:
    curves = analysis.data["curves"]
    datasets = sorted(curves["dataset"].unique())
    fig, axes = _grid(len(datasets), 2, width=4.4, height=3.2, gap_w=0.9, gap_h=0.9)
    for r, dataset in enumerate(datasets):
        for c, rep in enumerate(("sampled", "mean")):
            ax = axes[r, c]
            part = curves[(curves["dataset"] == dataset) & (curves["representation"] == rep)]
            for i, (method, group) in enumerate(part.groupby("method")):
                group = group.sort_values("value_index")
                color = COLORS[i % len(COLORS)]
                ax.plot(group["value_index"], group["median"], marker="o", color=color, label=_label(method))
                ax.fill_between(group["value_index"], group["q25"], group["q75"], color=color, alpha=0.15)
            ax.set_title(f"{dataset}: {rep} representation", fontsize=9)
            ax.set_xlabel("regularisation strength (value index)", fontsize=8)
            ax.set_ylabel("total correlation (nats)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, color="0.9")
    axes[0, 1].legend(fontsize=7)
    return [_png(fig, out / "tc_vs_regularisation.png")]


def draw_matrices(analysis: Analysis, out: Path) -> list[Path]:
    return [_heatmaps(analysis.data["matrices"], out / f"{analysis.key}.png", analysis.title)]


def draw_distributions(analysis: Analysis, out: Path) -> list[Path]:
    long = analysis.data["long"]
    metrics = list(dict.fromkeys(long["metric"]))
    datasets = sorted(long["dataset"].unique())
    methods = list(dict.fromkeys(long["method"]))
    rows = [("all data sets", long)] + (
        [(d, long[long["dataset"] == d]) for d in datasets] if len(datasets) > 1 else []
    )
    fig, axes = _grid(len(rows), len(metrics))
    for r, (name, part) in enumerate(rows):
        for c, metric in enumerate(metrics):
            ax = axes[r, c]
            subset = part[part["metric"] == metric]
            _boxes(ax, [(_label(m), subset.loc[subset["method"] == m, "score"].to_numpy()) for m in methods])
            ax.set_title(f"{metric}: {name}", fontsize=9)
    return [_png(fig, out / "score_distributions.png")]


def draw_hyperparameters(analysis: Analysis, out: Path) -> list[Path]:
    long = analysis.data["long"]
    paths = []
    for dataset in sorted(long["dataset"].unique()):
        part = long[long["dataset"] == dataset]
        metrics = list(dict.fromkeys(part["metric"]))
        methods = list(dict.fromkeys(part["method"]))
        fig, axes = _grid(len(metrics), len(methods), width=2.6, height=2.3, title=True)
        for r, metric in enumerate(metrics):
            for c, method in enumerate(methods):
                ax = axes[r, c]
                subset = part[(part["metric"] == metric) & (part["method"] == method)]
                values = sorted(subset["value_index"].unique())
                groups = []
                for v in values:
                    rows = subset[subset["value_index"] == v]
                    groups.append((f"{rows['value'].iloc[0]:g}", rows["score"].to_numpy()))
                _boxes(ax, groups, colors=[COLORS[c % len(COLORS)]])
                if groups:
                    ax.plot(range(1, len(groups) + 1), [np.median(g) for _, g in groups], color="0.25", linewidth=1)
                ax.set_title(f"{_label(method)}: {metric}", fontsize=8)
        fig.suptitle(f"{dataset}: score against hyperparameter value (boxes: seeds)", fontsize=10)
        paths.append(_png(fig, out / f"scores_by_hyperparameter_{dataset}.png"))
    return paths


def draw_seeds(analysis: Analysis, out: Path) -> list[Path]:
    long = analysis.data["long"]
    metrics = list(dict.fromkeys(long["metric"]))
    seeds = sorted(long["seed"].unique())
    fig, axes = _grid(1, len(metrics))
    for c, metric in enumerate(metrics):
        subset = long[long["metric"] == metric]
        _boxes(axes[0, c], [(f"seed {s}", subset.loc[subset["seed"] == s, "score"].to_numpy()) for s in seeds])
        axes[0, c].set_title(metric, fontsize=9)
    return [_png(fig, out / "scores_by_seed.png")]


def draw_variance(analysis: Analysis, out: Path) -> list[Path]:
    table = analysis.data["table"]
    labels = [f"{d}: {m}" for d, m in zip(table["dataset"], table["metric"])]
    fig = Figure(figsize=(max(5.0, 0.45 * len(labels) + 2), 3.6), layout="constrained")
    ax = fig.add_subplot()
    bottom = np.zeros(len(table))
    for i, part in enumerate(("method", "hyperparameter", "seed")):
        values = table[part].clip(lower=0).fillna(0).to_numpy()
        ax.bar(range(len(labels)), values, bottom=bottom, color=COLORS[i], label=part)
        bottom += values
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=7)
    ax.set_ylabel("share of the variance", fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return [_png(fig, out / "variance_explained.png")]


def draw_transfer(analysis: Analysis, out: Path) -> list[Path]:
    table = analysis.data["table"]
    fig = Figure(figsize=(5.6, 3.2), layout="constrained")
    ax = fig.add_subplot()
    labels = [f"{m} metric\n{d} data set" for m, d in zip(table["metric"], table["dataset"])]
    x = np.arange(len(labels))
    ax.bar(x - 0.2, table["probability"].fillna(0), width=0.4, color=COLORS[0], label="this study")
    ax.bar(x + 0.2, table["paper"], width=0.4, color=COLORS[1], label="Locatello et al.")
    ax.axhline(0.5, color="0.5", linewidth=0.8, linestyle="--")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("P(selected >= random)", fontsize=8)
    ax.legend(fontsize=7)
    return [_png(fig, out / "selection_transfer.png")]


def draw_seeds_grow(analysis: Analysis, out: Path) -> list[Path]:
    """Holtz Table 1 by seeds: per data set and metric, the mean Spearman (± std over draws of seeds) of each
    unsupervised score against n, with the paper's training-dynamics values at n = 5, 10, 25."""
    from untwine.study.analysis import PAPER_DYNAMICS

    table = analysis.data["table"]
    datasets = sorted(table["dataset"].unique())
    metrics = list(dict.fromkeys(table["metric"]))
    labels = list(dict.fromkeys(table["unsupervised"]))
    fig, axes = _grid(len(datasets), len(metrics), width=3.4, height=2.8, gap_h=0.9)
    for r, dataset in enumerate(datasets):
        for c, metric in enumerate(metrics):
            ax = axes[r, c]
            part = table[(table["dataset"] == dataset) & (table["metric"] == metric)]
            for i, label in enumerate(labels):
                line = part[part["unsupervised"] == label].sort_values("seeds")
                color = COLORS[i % len(COLORS)]
                if line.empty:
                    continue
                std = line["spearman_std"].fillna(0.0)
                shift = 0.08 * (i - (len(labels) - 1) / 2)  # side by side, not on top of each other
                ax.errorbar(line["seeds"] + shift, line["spearman_mean"], yerr=std, marker="o", ms=3, capsize=2,
                            color=color, label=label)  # fmt: skip
                if label == "training dynamics" and metric in PAPER_DYNAMICS:
                    paper = PAPER_DYNAMICS[metric]
                    ax.errorbar(list(paper), [v[0] for v in paper.values()], yerr=[v[1] for v in paper.values()],
                                marker="s", ms=4, capsize=2, linestyle=":", mfc="none", color=color,
                                label="training dynamics (paper)")  # fmt: skip
            ax.axhline(0.0, color="0.6", linewidth=0.8)
            ax.set_ylim(-1.05, 1.05)
            ax.set_title(f"{dataset}: {metric}", fontsize=9)
            ax.set_xlabel("seeds per specification", fontsize=8)
            ax.set_ylabel("Spearman", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, color="0.9")
    axes[0, -1].legend(fontsize=6)
    return [_png(fig, out / "selection_by_seeds.png")]


DRAW = {
    "tc_vs_regularisation": draw_tc,
    "metric_correlations": draw_matrices,
    "unsupervised_vs_scores": draw_matrices,
    "downstream_correlations": draw_matrices,
    "score_distributions": draw_distributions,
    "scores_by_hyperparameter": draw_hyperparameters,
    "scores_by_seed": draw_seeds,
    "variance_explained": draw_variance,
    "selection_transfer": draw_transfer,
    "selection_correlations": draw_matrices,
    "selection_by_seeds": draw_seeds_grow,
    "selection_fairness": draw_matrices,
}
# tables shown on the page (the others are only linked as CSV files)
SHOWN_TABLES = (
    "selection_transfer",
    "variance_explained",
    "selection_by_seeds",
    "selection_quality",
    "selection_fairness",
    "label_noise",
)


# --- HTML ------------------------------------------------------------------------------------------------------


def _table_html(table: pd.DataFrame, max_rows: int = 40) -> str:
    shown = table.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = []
    for _, row in shown.iterrows():
        cells = []
        for value in row:
            numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            cells.append(f'<td class="num">{_esc(float(value))}</td>' if numeric else f"<td>{_esc(value)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    more = f'<p class="note">{len(table) - max_rows} more rows in the CSV file.</p>' if len(table) > max_rows else ""
    return f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{more}'


def _models_section(frame: pd.DataFrame) -> str:
    counts = frame.groupby(["dataset", "method", "status"]).size().unstack(fill_value=0).reset_index()
    parts = [_table_html(counts, 100)]
    failed = frame[frame["status"] == "failed"]
    if len(failed):
        rows = failed[["model_id", "method", "dataset", "seed", "value", "reason"]]
        parts.append("<h3>Failed models</h3>" + _table_html(rows, 100))
    return "".join(parts)


def render_study_report(name: str, description: dict, frame: pd.DataFrame, analyses, figures: dict) -> str:
    """The study report as an HTML string (see `write_study_report`)."""
    done = finished(frame)
    evaluation = description.get("evaluation") or {}
    dash, dot = "\u2014", " \u00b7 "
    summary = dot.join(
        [
            f"{len(frame)} models: {int((frame['status'] == 'done').sum())} done, "
            f"{int((frame['status'] == 'failed').sum())} failed, "
            f"{int(frame['status'].isin(['pending', 'running']).sum())} not finished",
            f"data sets: {', '.join(sorted(done['dataset'].unique())) or dash}",
            f"methods: {', '.join(_label(m) for m in dict.fromkeys(done['method'])) or dash}",
            f"metrics: {', '.join(evaluation.get('metrics', [])) or dash}"
            + (f" on {evaluation['num_points']} points" if evaluation.get("num_points") else ""),
        ]
    )
    sections = [("models", "Models", _models_section(frame))]
    for analysis in analyses:
        parts = []
        if analysis.note:
            parts.append(f'<p class="note">{html.escape(analysis.note)}</p>')
        for path in figures.get(analysis.key, []):
            parts.append(_figure(path, analysis.title, analysis.caption, pixelated=False))
        if analysis.caption and not figures.get(analysis.key):
            parts.append(f"<p>{html.escape(analysis.caption)}</p>")
        for table_name, table in analysis.tables.items():
            if table_name in SHOWN_TABLES:
                parts.append(_table_html(table))
            parts.append(f'<p class="meta">Table: tables/{html.escape(table_name)}.csv ({len(table)} rows)</p>')
        sections.append((analysis.key, analysis.title, "".join(parts)))
    nav = " ".join(f'<a href="#{anchor}">{html.escape(heading.split(" (")[0])}</a>' for anchor, heading, _ in sections)
    body = "".join(
        f'<section id="{anchor}"><h2>{html.escape(heading)}</h2>{content}</section>'
        for anchor, heading, content in sections
    )
    title = f"untwine study report \u2014 {name}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{html.escape(title)}</title><link rel="icon" href="data:,"><style>{CSS}</style></head>\n'
        f'<body><main><header><h1>untwine study report</h1><p class="run">{html.escape(name)}</p>'
        f'<p class="meta">{html.escape(summary)}</p></header><nav>{nav}</nav>\n{body}\n</main></body></html>\n'
    )


def write_study_report(study_dir: str | Path) -> Path:
    """Run every analysis on the study's frame; write figures/*.png, tables/*.csv and report.html; return the
    report's path."""
    study = StudyDir(study_dir)
    with study.store() as store:
        frame = store.frame()
        description = store.meta("study") or {}
    if study.driver_pid() is None and "status" in frame:  # "running" rows left by a driver that died are pending
        frame.loc[frame["status"] == "running", "status"] = "pending"
    analyses = run_all(frame)
    figures: dict[str, list[Path]] = {}
    study.tables_dir.mkdir(parents=True, exist_ok=True)
    for analysis in analyses:
        for table_name, table in analysis.tables.items():
            table.to_csv(study.tables_dir / f"{table_name}.csv", index=False)
        if analysis.data and analysis.key in DRAW:
            figures[analysis.key] = DRAW[analysis.key](analysis, study.figures_dir)
    text = render_study_report(description.get("name") or study.path.name, description, frame, analyses, figures)
    atomic_write_text(study.report_path, text)
    return study.report_path
