"""A run's figures (`figures/`) and its self-contained HTML report (`report.html`), spec §8.1.

The report embeds every image as a base64 data URI and carries its CSS inline: it makes no request, runs no
script, and can be mailed or archived as one file. Every text that comes from the run's files is escaped.
"""

from __future__ import annotations

import base64
import html
import json
import math
import tomllib
from pathlib import Path

import torch
from PIL import Image

from untwine.data import FactorDataset
from untwine.errors import UntwineError
from untwine.runs import RunDir
from untwine.seeding import make_generator
from untwine.training.checkpoint import atomic_write_text
from untwine.viz.images import reconstructions, samples, save_gif, save_png, traversal_frames, traversal_grid
from untwine.viz.plots import training_curves

NUM_IMAGES = 64

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
        "the value above the column (-1 to 1); the other dimensions keep their value.",
    ),
    "traversals_gif": (
        "traversals.gif",
        "Animated traversals",
        "The same base code, animated: each tile moves one latent dimension (z0 top left, then row by row) along "
        "a triangle wave over [-2, 2] that starts at the dimension's base value; 20 frames at 10 frames per second.",
    ),
}

METRIC_NAMES = {
    "beta_vae": "BetaVAE score",
    "factor_vae": "FactorVAE score",
    "mig": "MIG",
    "dci": "DCI",
    "sap": "SAP score",
    "modularity_explicitness": "Modularity / explicitness",
    "unsupervised": "Unsupervised scores",
    "irs": "IRS",
    "downstream_task": "Downstream task",
}


def _as_run(run_dir: RunDir | str | Path) -> RunDir:
    return run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)


def figure_paths(run_dir: RunDir | str | Path) -> dict[str, Path]:
    """Where each figure of the run lives: name -> figures/<file>."""
    run = _as_run(run_dir)
    return {name: run.figures_dir / spec[0] for name, spec in FIGURES.items()}


def write_figures(
    run_dir: RunDir | str | Path,
    model: torch.nn.Module | None = None,
    dataset: FactorDataset | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the run's figures under figures/ and return name -> path.

    `model` defaults to the run's final checkpoint and `dataset` to the run's data set. Images come from
    `NUM_IMAGES` observations drawn with the "viz" stream of `seed` (the reference uses RandomState(0), §8.1);
    the traversals start from the first of them.
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
    save_png(traversal_grid(model, observations[0]), paths["traversals"])
    save_gif(traversal_frames(model, observations[0]), paths["traversals_gif"])
    paths["training_curves"].write_bytes(training_curves(run.read_log()))
    return paths


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


def metric_table(results: dict) -> str:
    """HTML tables of `eval.<representation>.<metric>.<key>` results, one per representation, with the
    `untrained.eval.*` value of the same network before training beside the trained one."""
    trained = {k[len("eval.") :]: v for k, v in results.items() if k.startswith("eval.")}
    untrained = {k[len("untrained.eval.") :]: v for k, v in results.items() if k.startswith("untrained.eval.")}
    if not trained and not untrained:
        return '<p class="note">No evaluation results yet (results.json has no eval.* keys).</p>'
    groups: dict[str, dict[str, list[tuple[str, str]]]] = {}  # representation -> metric -> [(key, name)]
    for name in sorted(set(trained) | set(untrained)):
        representation, metric, key = (name.split(".", 2) + ["", ""])[:3]
        groups.setdefault(representation, {}).setdefault(metric, []).append((key, name))
    order = sorted(groups, key=lambda r: ({"mean": 0, "sampled": 1}.get(r, 2), r))
    show_untrained = bool(untrained)
    parts = []
    for representation in order:
        head = "<th>Metric</th><th>Score</th><th>Trained</th>" + ("<th>Untrained</th>" if show_untrained else "")
        rows = []
        for metric, entries in groups[representation].items():
            label = METRIC_NAMES.get(metric, metric.replace("_", " "))
            for i, (key, name) in enumerate(entries):
                first = f'<td class="metric" rowspan="{len(entries)}">{html.escape(label)}</td>' if i == 0 else ""
                cells = f'<td class="num">{_esc(trained.get(name))}</td>'
                if show_untrained:
                    cells += f'<td class="num untrained">{_esc(untrained.get(name))}</td>'
                rows.append(f"<tr>{first}<td>{html.escape(key)}</td>{cells}</tr>")
        parts.append(
            f"<h3>Representation: {html.escape(representation)}</h3>"
            f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        )
    return "".join(parts)


def _figure(path: Path, heading: str, caption: str, pixelated: bool) -> str:
    """A <figure> with the image embedded as a data URI; images under 480 px wide are shown at 2x."""
    data = path.read_bytes()
    with Image.open(path) as image:
        width, height, kind = image.width, image.height, image.format.lower()
    scale = 2 if width < 480 else 1
    uri = f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"
    css = ' class="pixels"' if pixelated else ""
    return (
        f'<figure><img{css} src="{uri}" alt="{html.escape(heading)}" width="{width * scale}" '
        f'height="{height * scale}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


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
table.kv th { background: #f6f7f9; font-weight: 600; font-family: ui-monospace, Menlo, Consolas, monospace;
              font-size: 13px; }
table.kv td { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, Menlo, monospace; }
td.untrained { color: #6b7485; }
td.metric { font-weight: 600; background: #fafbfc; }
figure { margin: 8px 0 24px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #dde1e7; }
img.pixels { image-rendering: pixelated; }
figcaption { color: #5a6475; font-size: 14px; margin-top: 6px; max-width: 760px; }
.note { color: #6b7485; font-style: italic; }
"""


def render_report(name: str, config: dict, results: dict, figures: dict[str, Path]) -> str:
    """The report as an HTML string (see `write_report`)."""
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
    sections = [
        (
            "config",
            "Configuration",
            _key_value_columns(flat_config, exact=True) if flat_config else '<p class="note">No config.toml.</p>',
        ),
        (
            "metrics",
            "Disentanglement metrics",
            '<p class="meta">Trained: the final network; untrained: the same network at initialisation.</p>'
            + metric_table(results),
        ),
        (
            "training",
            "Training summary",
            _key_value_table(training)
            if training
            else '<p class="note">No training summary yet (results.json has no train.* keys).</p>',
        ),
    ]
    if other:
        sections.append(("other", "Other results", _key_value_table(other)))
    for figure_name, (_, heading, caption) in FIGURES.items():
        sections.append(
            (figure_name, heading, _figure(figures[figure_name], heading, caption, figure_name != "training_curves"))
        )
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


def write_report(run_dir: RunDir | str | Path, regenerate_figures: bool = False) -> Path:
    """Write report.html for a run and return its path.

    Figures are (re)drawn with `write_figures` (final checkpoint, run's data set) when `regenerate_figures` is set
    or when any is missing; otherwise the files under figures/ are used as they are.
    """
    run = _as_run(run_dir)
    figures = figure_paths(run)
    if regenerate_figures or not all(path.exists() for path in figures.values()):
        figures = write_figures(run)
    text = render_report(run.path.name, _read_config(run), run.read_results(), figures)
    atomic_write_text(run.report_path, text)  # readers never see a half-written report
    return run.report_path
