"""A run's figures (`figures/`) and its self-contained HTML report (`report.html`), spec §8.1.

The report embeds every image as a base64 data URI and carries its CSS inline: it makes no request, runs no
script, and can be mailed or archived as one file. Every text that comes from the run's files is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import tomllib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from untwine.data import FactorDataset, dataset_info
from untwine.errors import UntwineError
from untwine.evaluation.arrays import read_arrays
from untwine.evaluation.representation import REPRESENTATIONS
from untwine.metrics.headline import (
    METRIC_LABELS,
    evaluated_metrics,
    headline_keys,
    headline_table,
    parse_result_key,
    used_columns,
)
from untwine.runs import RunDir
from untwine.seeding import make_generator
from untwine.training.checkpoint import atomic_write_text
from untwine.viz.images import reconstructions, samples, save_gif, save_png, traversal_frames, traversal_grid
from untwine.viz.latents import (
    INACTIVE_KL,
    MI_SOURCES,
    captured_factors,
    latent_kl,
    latent_labels,
    stored_mutual_info,
)
from untwine.viz.plots import accuracy_by_size, heatmap, training_curves

NUM_IMAGES = 64
NUM_KL_POINTS = 512  # observations the per-latent KL of the traversal labels is averaged over

# name -> (file name, heading, caption); in the order the report shows them.
FIGURES = {
    "training_curves": (
        "training_curves.png",
        "Training curves",
        "Quantities logged during training (log.jsonl) against the training step.",
    ),
    "reconstructions": (
        "reconstructions.png",
        "Reconstructions",
        f"{NUM_IMAGES} pairs: a data set image (left) and its reconstruction (right), decoded from a code sampled "
        "from the encoder's posterior q(z|x).",
    ),
    "samples": (
        "samples.png",
        "Samples",
        f"Decodes of {NUM_IMAGES} codes drawn from the prior z ~ N(0, I).",
    ),
    "traversals": (
        "traversals.png",
        "Latent traversals",
        "Traversals around the encoder mean of one data set image: in row zi, latent dimension i is replaced by "
        "the value above the column (-1 to 1); the other dimensions keep their value. Each row is labelled with "
        "the factor the latent shares the most mutual information with (the matrix above, when MIG or modularity "
        f"was evaluated) and its KL to the prior in nats (mean over {NUM_KL_POINTS} images); latents with KL "
        f"below {INACTIVE_KL} nats are inactive (their posterior is the prior) and greyed.",
    ),
    "traversals_gif": (
        "traversals.gif",
        "Animated traversals",
        "The same base code, animated: each tile moves one latent dimension (z0 top left, then row by row) along "
        "a triangle wave over [-2, 2] that starts at the dimension's base value; 20 frames at 10 frames per second.",
    ),
}
DOWNSTREAM = ("downstream_logistic_regression", "downstream_boosted_trees")


def _as_run(run_dir: RunDir | str | Path) -> RunDir:
    return run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)


def figure_paths(run_dir: RunDir | str | Path) -> dict[str, Path]:
    """Where each figure of the run lives: name -> figures/<file>."""
    run = _as_run(run_dir)
    return {name: run.figures_dir / spec[0] for name, spec in FIGURES.items()}


def latents_path(run_dir: RunDir | str | Path) -> Path:
    """figures/latents.json: the per-latent KL and captured factors the traversal labels were drawn with."""
    return _as_run(run_dir).figures_dir / "latents.json"


def _captures(run: RunDir) -> list[str] | None:
    stored = stored_mutual_info(run)
    return captured_factors(stored[0], stored[1]) if stored is not None else None


def write_figures(
    run_dir: RunDir | str | Path,
    model: torch.nn.Module | None = None,
    dataset: FactorDataset | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the run's figures under figures/ and return name -> path.

    `model` defaults to the run's final checkpoint and `dataset` to the run's data set. Images come from
    `NUM_IMAGES` observations drawn with the "viz" stream of `seed` (the reference uses RandomState(0), §8.1);
    the traversals start from the first of them. Their row labels (latents.py) use the KL over `NUM_KL_POINTS`
    further observations and the mutual-information matrix stored by the run's evaluation, if any.
    """
    run = _as_run(run_dir)
    model = model if model is not None else run.load_model("final")
    dataset = dataset if dataset is not None else run.load_dataset()
    generator = make_generator(seed, "viz")
    _, observations = dataset.sample(NUM_IMAGES, generator)
    paths = figure_paths(run)
    run.figures_dir.mkdir(parents=True, exist_ok=True)
    save_png(reconstructions(model, observations, generator), paths["reconstructions"])
    save_png(samples(model, NUM_IMAGES, generator), paths["samples"])
    kl = latent_kl(model, dataset.sample(NUM_KL_POINTS, generator)[1])
    captures = _captures(run)
    labels, inactive = latent_labels(kl, captures)
    save_png(traversal_grid(model, observations[0], row_labels=labels, inactive=inactive), paths["traversals"])
    save_gif(traversal_frames(model, observations[0]), paths["traversals_gif"])
    paths["training_curves"].write_bytes(training_curves(run.read_log()))
    latents = {"kl": [float(v) for v in kl], "inactive": inactive, "captures": captures}
    atomic_write_text(latents_path(run), json.dumps(latents, indent=1))
    return paths


def _figures_current(run: RunDir, figures: dict[str, Path]) -> bool:
    """All figures exist and the traversal labels were drawn with the run's current mutual-information matrix."""
    if not all(path.exists() for path in figures.values()):
        return False
    try:
        drawn = json.loads(latents_path(run).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return drawn.get("captures") == _captures(run)


# ---------------------------------------------------------------------------------------------------------------
# HTML


def _fmt(value, exact: bool = False) -> str:
    """A value as short text: floats with 4 significant digits (all of them if `exact`), containers as JSON,
    None as a dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) and not exact else repr(value)
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value)
        return text if len(text) <= 200 else text[:197] + "..."
    return str(value)


def _esc(value, exact: bool = False) -> str:
    return html.escape(_fmt(value, exact))


def _flatten(mapping: dict, prefix: str = "") -> dict:
    """Nested dicts (TOML tables) -> {"table.key": value}."""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_config(run: RunDir) -> dict:
    """The validated config; the raw TOML if it does not validate (older or newer version); {} if absent."""
    try:
        return run.read_config()
    except UntwineError:
        try:
            return tomllib.loads(run.config_path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            return {}


def _key_value_table(items: dict, exact: bool = False) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_esc(v, exact)}</td></tr>" for k, v in items.items())
    return f'<table class="kv">{rows}</table>'


def _key_value_columns(items: dict, exact: bool = False, per_column: int = 10) -> str:
    """Long key/value lists as tables side by side (wrapping on narrow screens)."""
    keys = list(items)
    count = max(1, -(-len(keys) // per_column))
    size = -(-len(keys) // count)
    tables = [_key_value_table({k: items[k] for k in keys[i : i + size]}, exact) for i in range(0, len(keys), size)]
    return f'<div class="kv-columns">{"".join(tables)}</div>'


def _columns_head(columns: list[tuple[str, str]], first: str) -> str:
    """Two header rows: the network (trained / untrained) over its representations (mean / sampled)."""
    networks = [n for n in ("trained", "untrained") if any(c[0] == n for c in columns)]
    top = f'<th rowspan="2">{html.escape(first)}</th>' + "".join(
        f'<th colspan="{sum(c[0] == n for c in columns)}" class="group">{n}</th>' for n in networks
    )
    bottom = "".join(f"<th>{html.escape(rep)}</th>" for _, rep in columns)
    return f"<thead><tr>{top}</tr><tr>{bottom}</tr></thead>"


def _value_cells(values: dict, columns: list[tuple[str, str]], decimals: int | None = None) -> str:
    """Table cells of values per (network, representation) column; `decimals`: a fixed number of them (else 4
    significant digits)."""
    cells = []
    for network, rep in columns:
        value = values.get((network, rep))
        fixed = decimals is not None and isinstance(value, float) and abs(value) < 1e6
        text = f"{value:.{decimals}f}" if fixed else _fmt(value)
        cells.append(f'<td class="num{" untrained" if network == "untrained" else ""}">{html.escape(text)}</td>')
    return "".join(cells)


def headline_section(results: dict) -> str:
    """The headline table (untwine.metrics.headline): one row per headline score, columns mean / sampled
    representation of the trained and the untrained network."""
    rows = headline_table(results)
    if not rows:
        return (
            '<p class="note">No evaluation results yet (results.json has no eval.* keys): '
            "<code>untwine evaluate RUN --metrics all</code> fills this table.</p>"
        )
    columns = used_columns(rows)
    body = []
    for row in rows:
        better = row.headline.better
        mark = ' <span class="dir" title="lower is better">\u2193</span>' if better == "lower" else ""
        label = f'<a href="#details-{html.escape(row.metric)}">{html.escape(row.label)}</a>{mark}'
        body.append(f"<tr><th>{label}</th>{_value_cells(row.values, columns, decimals=3)}</tr>")
    return (
        f'<table class="headline">{_columns_head(columns, "Score")}<tbody>{"".join(body)}</tbody></table>'
        '<p class="meta">Trained: the final network; untrained: the same network at initialisation (what the '
        "architecture gives for free). Mean: the encoder mean as the code; sampled: a draw from q(z|x). A dash: not "
        "evaluated (or not at these sample sizes, e.g. 10,000-point accuracy under <code>--num-points</code>). "
        "\u2193: lower is better; higher is better for the others. "
        'Every key of every metric is under <a href="#details">All scores</a>.</p>'
    )


def _eval_values(results: dict) -> dict[str, dict[str, dict[tuple[str, str], object]]]:
    """metric -> key -> (network, representation) -> value, for every eval.* / untrained.eval.* key."""
    table: dict[str, dict[str, dict[tuple[str, str], object]]] = {}
    for name, value in results.items():
        parsed = parse_result_key(name)
        if parsed is not None:
            network, rep, metric, key = parsed
            table.setdefault(metric, {}).setdefault(key, {})[(network, rep)] = value
    return table


def _eval_columns(table: dict) -> list[tuple[str, str]]:
    present = {c for keys in table.values() for values in keys.values() for c in values}
    order = [(n, r) for n in ("trained", "untrained") for r in REPRESENTATIONS]
    return [c for c in order if c in present] + sorted(present - set(order))


def _natural(key: str) -> list:
    """Sort "10:x" < "100:x" < "1000:x" < "10000:x" and factor_2 < factor_10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", key)]


HEADLINE_ROW = ' class="headline-key"'


def metric_details(results: dict) -> str:
    """Every key of every evaluated metric, one collapsed <details> per metric (headline keys first, in bold);
    elapsed times are in the timing table instead."""
    table = _eval_values(results)
    if not table:
        return '<p class="note">No evaluation results yet.</p>'
    columns = _eval_columns(table)
    parts = []
    for metric in evaluated_metrics(results):
        headline = headline_keys(metric)
        keys = [k for k in table[metric] if k != "elapsed_s"]
        keys.sort(key=lambda k: (k not in headline, headline.index(k) if k in headline else 0, _natural(k)))
        rows = "".join(
            f"<tr{HEADLINE_ROW if key in headline else ''}><th>{html.escape(key)}</th>"
            f"{_value_cells(table[metric][key], columns)}</tr>"
            for key in keys
        )
        label = METRIC_LABELS.get(metric, metric.replace("_", " "))
        parts.append(
            f'<details id="details-{html.escape(metric)}"><summary>{html.escape(label)} '
            f'<span class="meta">({len(keys)} {"key" if len(keys) == 1 else "keys"})</span></summary>'
            f'<table class="metrics">{_columns_head(columns, "Key")}<tbody>{rows}</tbody></table></details>'
        )
    return "".join(parts)


def metric_timing(results: dict) -> str:
    """Seconds each metric took, per network and representation (the `elapsed_s` keys), with the total."""
    table = _eval_values(results)
    timed = {m: keys["elapsed_s"] for m, keys in table.items() if "elapsed_s" in keys}
    if not timed:
        return '<p class="note">No evaluation times recorded.</p>'
    columns = _eval_columns({m: {"elapsed_s": v} for m, v in timed.items()})
    rows = []
    for metric in evaluated_metrics(results):
        if metric in timed:
            label = METRIC_LABELS.get(metric, metric)
            rows.append(f"<tr><th>{html.escape(label)}</th>{_value_cells(timed[metric], columns, decimals=1)}</tr>")
    total = sum(float(v) for values in timed.values() for v in values.values() if isinstance(v, (int, float)))
    return (
        f'<table class="metrics">{_columns_head(columns, "Metric (seconds)")}<tbody>{"".join(rows)}</tbody></table>'
        f'<p class="meta">Total: {total:.1f} s of metric evaluation (encoding included).</p>'
    )


def _matrix_numbers(name: str, matrix, row_labels, col_labels) -> str:
    """The matrix a heatmap draws, as a table of its values (4 decimals), collapsed under the picture."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in col_labels)
    rows = "".join(
        f"<tr><th>{html.escape(str(r))}</th>" + "".join(f'<td class="num">{v:.4f}</td>' for v in values) + "</tr>"
        for r, values in zip(row_labels, np.asarray(matrix, dtype=np.float64))
    )
    return (
        f'<details class="numbers"><summary>the numbers</summary><table class="matrix" data-matrix="{name}">'
        f"<thead><tr><th></th>{head}</tr></thead><tbody>{rows}</tbody></table></details>"
    )


def _heatmap_figure(
    name: str, matrix, factor_names, title: str, value_label: str, caption: str, inactive: list | None = None
) -> str:
    matrix = np.asarray(matrix, dtype=np.float64)
    if inactive is None or len(inactive) != matrix.shape[0]:
        inactive = [False] * matrix.shape[0]
    rows = [f"z{i} (inactive)" if off else f"z{i}" for i, off in enumerate(inactive)]
    png = heatmap(matrix, rows, factor_names, title, value_label)
    return (
        f'<div class="picture">{_figure_bytes(png, "png", title, caption, False)}'
        f"{_matrix_numbers(name, matrix, rows, factor_names)}</div>"
    )


def _missing_matrix(results: dict, metrics: tuple[str, ...], what: str) -> str:
    evaluated = [m for m in metrics if any(k.startswith(f"eval.mean.{m}.") for k in results)]
    if evaluated:
        return (
            f'<p class="note">{html.escape(what)}: {html.escape(METRIC_LABELS.get(evaluated[0], evaluated[0]))} was '
            "evaluated before untwine stored the matrices behind its scores, so there is no matrix to draw. Evaluate "
            f"again (<code>untwine evaluate RUN --metrics {evaluated[0]}</code>) to see it.</p>"
        )
    return (
        f'<p class="note">{html.escape(what)}: not evaluated. <code>untwine evaluate RUN --metrics '
        f"{metrics[0]}</code> draws it.</p>"
    )


def matrix_section(results: dict, stored: dict[str, dict | None], inactive: list | None = None) -> str:
    """The code x factor mutual-information matrix (the one MIG, or else modularity, was computed from) and DCI's
    importance matrix, as heatmaps of exactly the stored matrices (trained network, mean representation); rows of
    latents flagged `inactive` (figures/latents.json) are labelled so."""
    parts = []
    source = next((m for m in MI_SOURCES if stored.get(m) is not None and "mutual_info" in stored[m]), None)
    if source is not None:
        arrays = stored[source]
        entropy = stored["mig"]["factor_entropy"] if source == "mig" and "factor_entropy" in stored["mig"] else None
        caption = (
            f"Mutual information (nats) between each latent (20-bin histogram of its values) and each factor, on "
            f"the trained network's mean representation: the matrix {METRIC_LABELS[source]} was computed from. "
            "A disentangled code has one dark cell per row and per column. Inactive latents (KL near 0, see the "
            "traversals) vary too little to matter to the decoder, but the histogram estimate rescales each latent "
            "to its own range and can still find information in them. MIG is the mean over factors of the gap "
            "between the two largest entries of a column, divided by the factor's entropy"
        )
        if entropy is not None:
            caption += " (" + ", ".join(f"{n} {h:.2f}" for n, h in zip(arrays["factor_names"], entropy)) + " nats)"
        parts.append(
            _heatmap_figure(
                "mutual_info",
                arrays["mutual_info"],
                [str(n) for n in arrays["factor_names"]],
                "Mutual information I(z_i; v_k)",
                "nats",
                caption + ".",
                inactive,
            )
        )
    else:
        parts.append(_missing_matrix(results, MI_SOURCES, "Mutual-information matrix"))
    dci = stored.get("dci")
    if dci is not None and "importance" in dci:
        parts.append(
            _heatmap_figure(
                "dci_importance",
                dci["importance"],
                [str(n) for n in dci["factor_names"]],
                "DCI importance R[i, k]",
                "importance",
                "Importance of each latent for predicting each factor (one classifier per factor; each column sums "
                "to 1), on the trained network's mean representation: the matrix DCI disentanglement (one factor per "
                "row) and completeness (one latent per column) were computed from.",
                inactive,
            )
        )
    else:
        parts.append(_missing_matrix(results, ("dci",), "DCI importance matrix"))
    return f'<div class="pictures">{"".join(parts)}</div>'


def downstream_section(results: dict, factor_names: list[str]) -> str | None:
    """Test accuracy per factor against the training-set size, per downstream predictor (trained network, mean
    representation), from the `{n}:test_accuracy_factor_{k}` results; None if no downstream task was evaluated."""
    panels = []
    for metric in DOWNSTREAM:
        prefix = f"eval.mean.{metric}."
        found: dict[int, dict[int, float]] = {}
        for name, value in results.items():
            match = name.startswith(prefix) and re.fullmatch(r"(\d+):test_accuracy_factor_(\d+)", name[len(prefix) :])
            if match:
                found.setdefault(int(match.group(2)), {})[int(match.group(1))] = float(value)
        if not found:
            continue
        sizes = sorted({n for per_size in found.values() for n in per_size})
        factors = sorted(found)
        accuracy = [[found[k].get(n, np.nan) for n in sizes] for k in factors]
        names = [factor_names[k] if k < len(factor_names) else f"factor {k}" for k in factors]
        panels.append((METRIC_LABELS[metric], sizes, names, accuracy))
    if not panels:
        return None
    caption = (
        "Test accuracy (5,000 fresh points) of one classifier per factor trained on n codes of the trained network's "
        "mean representation, against n; the dashed black line is the mean over factors. Sample efficiency is the "
        "mean accuracy at 100 points divided by that at 10,000."
    )
    return _figure_bytes(accuracy_by_size(panels), "png", "Downstream accuracy", caption, False)


def _figure_bytes(data: bytes, kind: str, heading: str, caption: str, pixelated: bool) -> str:
    """A <figure> with the image embedded as a data URI; pixel images under 480 px wide are shown at 2x."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.width, image.height
    scale = 2 if pixelated and width < 480 else 1
    uri = f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"
    css = ' class="pixels"' if pixelated else ""
    return (
        f'<figure><img{css} src="{uri}" alt="{html.escape(heading)}" width="{width * scale}" '
        f'height="{height * scale}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def _figure(path: Path, heading: str, caption: str, pixelated: bool) -> str:
    with Image.open(path) as image:
        kind = image.format.lower()
    return _figure_bytes(path.read_bytes(), kind, heading, caption, pixelated)


CSS = """
body { margin: 0; background: #f6f7f9; color: #1d2330; font: 15px/1.5 system-ui, -apple-system, "Segoe UI",
       Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; min-height: 100vh;
       box-sizing: border-box; }
header { border-bottom: 2px solid #1f5fa8; margin-bottom: 8px; }
h1 { font-size: 26px; margin: 8px 0 0; }
.run { font: 600 17px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; color: #1f5fa8; margin: 2px 0 4px; }
.meta { color: #5a6475; margin: 0 0 12px; }
nav { font-size: 14px; margin: 10px 0 4px; }
nav a { color: #1f5fa8; margin-right: 14px; text-decoration: none; white-space: nowrap; }
.kv-columns { display: flex; flex-wrap: wrap; gap: 0 24px; align-items: flex-start; }
h2 { font-size: 20px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #dde1e7; }
h3 { font-size: 15px; margin: 18px 0 6px; color: #3a4456; }
table { border-collapse: collapse; font-size: 14px; margin: 4px 0 8px; }
th, td { border: 1px solid #dde1e7; padding: 4px 10px; text-align: left; vertical-align: top; }
thead th { background: #eef2f7; }
thead th.group { text-align: center; }
table.kv th { background: #f6f7f9; font-weight: 600; font-family: ui-monospace, Menlo, Consolas, monospace;
              font-size: 13px; }
table.kv td { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
table.headline { font-size: 15px; }
table.headline tbody th { font-weight: 600; background: #fafbfc; }
table.headline a { color: inherit; text-decoration: none; }
table.headline td.num { min-width: 5.5em; }
.dir { color: #8a5a00; font-weight: 700; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, Menlo, monospace; }
td.untrained { color: #6b7485; }
tr.headline-key th, tr.headline-key td { font-weight: 700; }
table.metrics tbody th { font-weight: 400; font-family: ui-monospace, Menlo, monospace; font-size: 13px; }
details { margin: 4px 0; }
details > summary { cursor: pointer; font-weight: 600; padding: 3px 0; }
details.numbers > summary { font-weight: 400; color: #5a6475; font-size: 13px; }
table.matrix { font-size: 12px; }
table.matrix th { white-space: nowrap; }
.pictures { display: flex; flex-wrap: wrap; gap: 8px 32px; align-items: flex-start; }
.picture { width: 490px; max-width: 100%; }
figure { margin: 8px 0 24px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #dde1e7; }
img.pixels { image-rendering: pixelated; }
figcaption { color: #5a6475; font-size: 14px; margin-top: 6px; max-width: 760px; }
.note { color: #6b7485; font-style: italic; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; font-style: normal; }
"""


def _factor_names(config: dict, stored: dict[str, dict | None]) -> list[str]:
    """The data set's factor names: from any stored evaluation, else the registry entry of the config's data set."""
    for arrays in stored.values():
        if arrays is not None and "factor_names" in arrays:
            return [str(n) for n in arrays["factor_names"]]
    try:
        return list(dataset_info(str(config.get("dataset", ""))).factor_names)
    except UntwineError:
        return []


def render_report(
    name: str,
    config: dict,
    results: dict,
    figures: dict[str, Path],
    stored: dict[str, dict | None] | None = None,
    traversal_note: str | None = None,
    latents: dict | None = None,
) -> str:
    """The report as an HTML string (see `write_report`). `stored`: metric -> the arrays its evaluation of the
    trained network's mean representation stored (`untwine.evaluation.arrays`), None where there are none;
    `traversal_note`: a warning shown under the traversals; `latents`: figures/latents.json (KL, inactive flags)."""
    stored = stored or {}
    inactive = (latents or {}).get("inactive")
    flat_config = _flatten(config)
    summary = " \u00b7 ".join(
        f"{html.escape(k)} {_esc(flat_config[k], exact=True)}"
        for k in ("method", "beta", "dataset", "latent_dim", "steps")
        if k in flat_config
    )
    training = {k[len("train.") :]: v for k, v in results.items() if k.startswith("train.")}
    other = {
        k: v
        for k, v in results.items()  # reference.* keys repeat eval.* under the reference's names
        if not k.startswith(("train.", "eval.", "untrained.eval.", "reference.", "untrained.reference."))
    }

    def figure(figure_name: str, note: str | None = None) -> tuple[str, str, str]:
        _, heading, caption = FIGURES[figure_name]
        content = _figure(figures[figure_name], heading, caption, figure_name != "training_curves")
        return figure_name, heading, content + (f'<p class="note">{html.escape(note)}</p>' if note else "")

    sections = [
        ("headline", "Headline scores", headline_section(results)),
        ("latents", "Which latent captures which factor", matrix_section(results, stored, inactive)),
        figure("traversals", traversal_note),
    ]
    downstream = downstream_section(results, _factor_names(config, stored))
    if downstream is not None:
        sections.append(("downstream", "Downstream accuracy", downstream))
    sections += [
        ("details", "All scores", metric_details(results)),
        ("timing", "Evaluation time", metric_timing(results)),
        figure("training_curves"),
        figure("reconstructions"),
        figure("samples"),
        figure("traversals_gif"),
        (
            "training",
            "Training summary",
            _key_value_table(training)
            if training
            else '<p class="note">No training summary yet (results.json has no train.* keys).</p>',
        ),
        (
            "config",
            "Configuration",
            _key_value_columns(flat_config, exact=True) if flat_config else '<p class="note">No config.toml.</p>',
        ),
    ]
    if other:
        sections.append(("other", "Other results", _key_value_table(other)))
    nav = " ".join(f'<a href="#{anchor}">{html.escape(heading)}</a>' for anchor, heading, _ in sections)
    body = "".join(
        f'<section id="{anchor}"><h2>{html.escape(heading)}</h2>{content}</section>'
        for anchor, heading, content in sections
    )
    title = f"untwine report \u2014 {name}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{html.escape(title)}</title><link rel="icon" href="data:,"><style>{CSS}</style></head>\n'
        f'<body><main><header><h1>untwine report</h1><p class="run">{html.escape(name)}</p>'
        f'<p class="meta">{summary}</p></header><nav>{nav}</nav>\n{body}\n</main></body></html>\n'
    )


def stored_matrices(run_dir: RunDir | str | Path) -> dict[str, dict | None]:
    """metric -> the arrays stored by evaluating the trained network's mean representation (None if absent; a
    corrupt file counts as absent, so the report says there is no matrix rather than failing)."""
    run = _as_run(run_dir)
    stored = {}
    for metric in (*MI_SOURCES, "dci"):
        try:
            stored[metric] = read_arrays(run, metric, "mean", "trained")
        except UntwineError:
            stored[metric] = None
    return stored


def write_report(run_dir: RunDir | str | Path, regenerate_figures: bool = False) -> Path:
    """Write report.html for a run and return its path.

    Figures are (re)drawn with `write_figures` (final checkpoint, run's data set) when `regenerate_figures` is set,
    when any is missing, or when the traversal labels predate the run's latest mutual-information matrix;
    otherwise the files under figures/ are used as they are. The heatmaps and the downstream plot are drawn from
    the stored matrices and results.json every time.
    """
    run = _as_run(run_dir)
    figures = figure_paths(run)
    stale = None
    if regenerate_figures or not all(path.exists() for path in figures.values()):
        figures = write_figures(run)
    elif not _figures_current(run, figures):
        try:
            figures = write_figures(run)
        except UntwineError as exc:  # keep the figures there are (e.g. the data set's files moved)
            stale = f"The row labels predate the latest evaluation; redrawing them failed: {exc}"
    try:
        latents = json.loads(latents_path(run).read_text())
    except (OSError, json.JSONDecodeError):
        latents = None
    text = render_report(
        run.path.name, _read_config(run), run.read_results(), figures, stored_matrices(run), stale, latents
    )
    atomic_write_text(run.report_path, text)  # readers never see a half-written report
    return run.report_path
