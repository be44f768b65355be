"""Visualisation (spec §8.1): image functions, the animated traversal GIF, training curves and the HTML report.

Everything runs on tiny untrained networks and a 12-image stored data set; no data set is rendered.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from untwine.config import TrainConfig
from untwine.data import StoredDataset
from untwine.errors import InvalidInputError
from untwine.nn import GaussianVAE
from untwine.runs import RunDir
from untwine.training.checkpoint import save_checkpoint
from untwine.viz import (
    best_num_rows,
    decode_images,
    encode_means,
    fixed_interval_cycle,
    reconstructions,
    samples,
    save_gif,
    tile,
    to_uint8,
    training_curves,
    traversal_frames,
    traversal_grid,
    triangle_positions,
    write_figures,
    write_report,
)
from untwine.viz.report import FIGURES, render_report


def lively_model(channels: int = 1, latent_dim: int = 10, seed: int = 0) -> GaussianVAE:
    """An untrained conv VAE whose images vary visibly with z (at Glorot init the logits are all near 0)."""
    model = GaussianVAE((channels, 64, 64), latent_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.decoder.deconv[-1].weight.mul_(300.0)
    return model.eval()


def tiny_dataset(channels: int = 1) -> StoredDataset:
    """12 random binary images on a 3 x 4 factor grid."""
    g = torch.Generator().manual_seed(0)
    storage = (torch.rand(12, channels, 64, 64, generator=g) > 0.8).to(torch.uint8) * 255
    return StoredDataset("tiny", storage, (3, 4), ("a", "b"), (channels, 64, 64))


def observations(channels: int = 1, n: int = 12) -> torch.Tensor:
    return tiny_dataset(channels).sample(n, torch.Generator().manual_seed(1))[1]


@pytest.fixture(scope="module")
def model() -> GaussianVAE:
    return lively_model()


# ---------------------------------------------------------------------------------------------------------------
# Conversion and layout


def test_to_uint8_truncates_clips_and_repeats_gray():
    x = torch.tensor([0.0, 0.5, 0.999, 1.0, -0.2, 1.5]).view(1, 1, 1, 6)
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 6, 3)
    assert out[0, 0, :, 0].tolist() == [0, 127, 254, 255, 0, 255]  # x * 255, truncated (spec §8.1)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()
    rgb = to_uint8(torch.rand(3, 5, 4))
    assert rgb.shape == (5, 4, 3)


def test_tile_places_row_major_and_fills_missing_cells():
    images = np.stack([np.full((2, 3, 3), i * 10, np.uint8) for i in range(1, 6)])  # 5 images 2 x 3
    grid = tile(images, rows=2, cols=3, pad=1, pad_value=255)
    assert grid.shape == (2 * 2 + 1, 3 * 3 + 2, 3)
    assert (grid[0:2, 0:3] == 10).all() and (grid[0:2, 4:7] == 20).all() and (grid[3:5, 0:3] == 40).all()
    assert (grid[2] == 255).all() and (grid[:, 3] == 255).all()  # padding
    assert (grid[3:5, 8:11] == 255).all()  # the sixth cell is empty: filled with the pad value


@pytest.mark.parametrize(
    "n, rows", [(1, 1), (2, 1), (3, 1), (5, 2), (6, 2), (7, 2), (9, 3), (10, 2), (11, 3), (12, 3), (16, 4)]
)
def test_best_num_rows(n, rows):
    assert best_num_rows(n) == rows


def test_triangle_positions_hand_computed():
    # From 0: up by 0.1 per frame to 1 at frame 10, then back down (endpoint excluded: last frame is 0.1).
    expected = [k / 10 for k in range(11)] + [1 - k / 10 for k in range(1, 10)]
    np.testing.assert_allclose(triangle_positions(0.0, 20), expected, atol=1e-12)
    np.testing.assert_allclose(triangle_positions(0.5, 4), [0.5, 1.0, 0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(triangle_positions(1.0, 4), [1.0, 0.5, 0.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(triangle_positions(0.25, 8), [0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-12)
    np.testing.assert_allclose(triangle_positions(0.3, 5), [0.3, 0.7, 0.9, 0.5, 0.1], atol=1e-12)


def test_fixed_interval_cycle_maps_the_wave_onto_the_interval():
    np.testing.assert_allclose(fixed_interval_cycle(0.0, 4, (-2, 2)), [0.0, 2.0, 0.0, -2.0], atol=1e-12)
    np.testing.assert_allclose(fixed_interval_cycle(-2.0, 4, (-2, 2)), [-2.0, 0.0, 2.0, 0.0], atol=1e-12)
    # A base value outside the interval starts at the nearer end [deviation, documented].
    np.testing.assert_allclose(fixed_interval_cycle(3.0, 4, (-2, 2)), [2.0, 0.0, -2.0, 0.0], atol=1e-12)
    values = fixed_interval_cycle(0.37, 20)
    assert values[0] == pytest.approx(0.37) and values.min() >= -2 and values.max() <= 2


# ---------------------------------------------------------------------------------------------------------------
# Model images


@pytest.mark.parametrize("channels", [1, 3])
def test_reconstructions_pairs_inputs_with_sampled_reconstructions(channels):
    model = lively_model(channels)
    x = tiny_dataset(channels).sample(64, torch.Generator().manual_seed(1))[1]
    image = reconstructions(model, x, torch.Generator().manual_seed(2))
    assert image.dtype == np.uint8
    assert image.shape == (8 * 64 + 7 * 4, 8 * 128 + 7 * 4, 3)  # 8 x 8 pairs, 4 px padding
    np.testing.assert_array_equal(image[:64, :64], to_uint8(x[0]))  # left: the input itself
    again = reconstructions(model, x, torch.Generator().manual_seed(2))
    other = reconstructions(model, x, torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(image, again)
    assert not np.array_equal(image[:64, 64:128], other[:64, 64:128])  # decoded from a *sampled* z
    small = reconstructions(model, x[:5], torch.Generator().manual_seed(2))
    assert small.shape == (2 * 64 + 4, 3 * 128 + 2 * 4, 3)


@pytest.mark.parametrize("channels", [1, 3])
def test_samples_shape_and_range(channels):
    model = lively_model(channels)
    image = samples(model, 64, torch.Generator().manual_seed(0))
    assert image.dtype == np.uint8 and image.shape == (8 * 64 + 7 * 4, 8 * 64 + 7 * 4, 3)
    assert image.max() > image.min()
    assert samples(model, 10, torch.Generator().manual_seed(0)).shape == (3 * 64 + 2 * 4, 4 * 64 + 3 * 4, 3)
    if channels == 1:
        assert (image[..., 0] == image[..., 2]).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_traversal_grid_replaces_one_dimension_per_row(channels):
    model = lively_model(channels)
    x = observations(channels)[0]
    grid = traversal_grid(model, x, annotate=False)
    assert grid.dtype == np.uint8 and grid.shape == (10 * 64 + 9 * 2, 11 * 64 + 10 * 2, 3)
    # Row 3, column 8: base code (encoder mean) with z3 *replaced* by linspace(-1, 1, 11)[8] = 0.6.
    z = encode_means(model, x).clone()
    z[0, 3] = 0.6
    expected = to_uint8(decode_images(model, z))[0]
    np.testing.assert_array_equal(grid[3 * 66 : 3 * 66 + 64, 8 * 66 : 8 * 66 + 64], expected)
    annotated = traversal_grid(model, x)
    assert annotated.shape[0] > grid.shape[0] and annotated.shape[1] > grid.shape[1]
    assert traversal_grid(model, x, values=[-2, 0, 2], annotate=False).shape == (10 * 64 + 9 * 2, 3 * 64 + 2 * 2, 3)


def test_traversal_frames_tile_all_dimensions(model):
    x = observations()[0]
    frames = traversal_frames(model, x)
    assert len(frames) == 20
    assert all(f.dtype == np.uint8 and f.shape == (2 * 64 + 10, 5 * 64 + 4 * 10, 3) for f in frames)  # 2 x 5
    assert (frames[0][64:74] == 255).all() and (frames[0][:, 64:74] == 255).all()  # 10 px white padding
    # Frame 7, tile of z6 (row 1, column 1): z6 follows its triangle wave from the base value, the rest stays.
    base = encode_means(model, x)
    z = base.clone()
    z[0, 6] = float(fixed_interval_cycle(float(base[0, 6]), 20)[7])
    expected = to_uint8(decode_images(model, z))[0]
    np.testing.assert_array_equal(frames[7][74:138, 74:138], expected)
    seven = traversal_frames(lively_model(latent_dim=7), x, num_frames=4)
    assert len(seven) == 4 and seven[0].shape == (2 * 64 + 10, 4 * 64 + 3 * 10, 3)  # 2 x 4, one cell empty
    assert (seven[0][74:, 3 * 74 :] == 255).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_gif_has_20_frames_of_the_right_size_and_loops(tmp_path, channels):
    model = lively_model(channels)
    frames = traversal_frames(model, observations(channels)[0])
    path = save_gif(frames, tmp_path / "traversals.gif", fps=10)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 20 and gif.size == (360, 138)
        assert gif.info["loop"] == 0 and gif.info["duration"] == 100
        decoded = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
    if channels == 1:  # gray frames are stored exactly: no grey boxes (spec §8.1, issue #26)
        for got, want in zip(decoded, frames):
            np.testing.assert_array_equal(got, want)
    else:
        assert np.abs(decoded[5].astype(int) - frames[5].astype(int)).mean() < 8


def test_identical_gif_frames_keep_the_total_duration(tmp_path):
    frame = np.zeros((4, 4, 3), np.uint8)
    path = save_gif([frame, frame, frame, frame + 255], tmp_path / "still.gif", fps=10)
    with Image.open(path) as gif:
        durations = [f.info["duration"] for f in ImageSequence.Iterator(gif)]
    assert sum(durations) == 400


# ---------------------------------------------------------------------------------------------------------------
# Training curves


def _curve_pixels(png: bytes, panels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x, y) pixel coordinates of the curves' colour (#1f5fa8) in each of `panels` equal-width panels in a row."""
    with Image.open(io.BytesIO(png)) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=int)
    mask = (np.abs(rgb - np.array([0x1F, 0x5F, 0xA8])) < 30).all(axis=-1)
    width = rgb.shape[1] // panels
    found = []
    for p in range(panels):
        ys, xs = np.nonzero(mask[:, p * width : (p + 1) * width])
        found.append((xs, ys))
    return found


def test_training_curves_png():
    records = [{"step": s, "loss": 100 / s, "kl_loss": s / 10, "elbo": -100 / s, "elapsed_s": s} for s in (1, 50, 100)]
    png = training_curves(records)
    assert png.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (1200, 280)  # three 4 x 2.8 inch panels in one row at 100 dpi
    # each panel draws its own quantity: the loss falls (its curve goes down, image y grows to the right), the KL
    # and the ELBO rise
    for (xs, ys), falls in zip(_curve_pixels(png, 3), (True, False, False)):
        assert xs.size > 100, "a curve is drawn"
        left, right = ys[xs <= xs.min() + 3].mean(), ys[xs >= xs.max() - 3].mean()
        assert (right - left > 50) if falls else (left - right > 50), (left, right)
    empty = training_curves([])
    assert empty.startswith(b"\x89PNG") and _curve_pixels(empty, 1)[0][0].size == 0
    one_point = training_curves(
        [{"step": 1, "loss": float("nan")}, {"step": 2, "loss": 3.0}, {"step": 3, "loss": 1e400}]
    )
    xs, ys = _curve_pixels(one_point, 1)[0]
    assert 0 < xs.size < 100 and np.ptp(xs) < 12 and np.ptp(ys) < 12, "the NaN is skipped: one marker"


# ---------------------------------------------------------------------------------------------------------------
# Figures and report on a hand-made run directory

RESULTS = {
    "train.steps": 300,
    "train.elapsed_s": 12.5,
    "eval.mean.mig.discrete_mig": 0.2134,
    "untrained.eval.mean.mig.discrete_mig": 0.03125,
    "eval.mean.dci.disentanglement": 0.4567,
    "eval.sampled.mig.discrete_mig": 0.1789,
    "note": "<script>alert(1)</script>",
}


def blank_figures(folder) -> dict:
    """Tiny white images standing in for a run's figures (for render_report)."""
    figures = {}
    for name, (file, _, _) in FIGURES.items():
        figures[name] = folder / file
        Image.new("RGB", (4, 4), "white").save(figures[name])
    return figures


def section(html: str, anchor: str) -> str:
    """The inner HTML of <section id=anchor>."""
    return re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.S).group(1)


def make_run(path, model: GaussianVAE) -> RunDir:
    """config.toml, checkpoints/final, log.jsonl and results.json, as a finished training run leaves them."""
    run = RunDir(path)
    run.path.mkdir(parents=True)
    TrainConfig(steps=300, log_every=100, beta=4.0).write(run.config_path)
    save_checkpoint(run.checkpoints_dir / "final", model, {}, {}, 300)
    lines = [
        {
            "step": s,
            "loss": 300 / s,
            "reconstruction_loss": 250 / s,
            "kl_loss": 3.0,
            "regularizer": 12.0,
            "elbo": -280 / s,
            "elapsed_s": s / 20,
        }
        for s in (100, 200, 300)
    ]
    run.log_path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    run.results_path.write_text(json.dumps(RESULTS))
    return run


def test_write_figures_and_report(tmp_path, model):
    run = make_run(tmp_path / "beta4-run", model)
    paths = write_figures(run, dataset=tiny_dataset())  # the model comes from the run's final checkpoint
    assert sorted(p.name for p in paths.values()) == [
        "reconstructions.png",
        "samples.png",
        "training_curves.png",
        "traversals.gif",
        "traversals.png",
    ]
    assert all(p.parent == run.figures_dir and p.stat().st_size > 100 for p in paths.values())
    with Image.open(paths["traversals_gif"]) as gif:
        assert gif.n_frames == 20

    report = write_report(run)
    assert report == run.report_path
    text = report.read_text()
    assert "<title>untwine report \u2014 beta4-run</title>" in text
    assert len(re.findall(r"<img ", text)) == 5
    assert text.count('src="data:image/png;base64,') == 4 and text.count('src="data:image/gif;base64,') == 1
    for value in ("0.2134", "0.03125", "0.4567", "0.1789", "12.5"):
        assert value in text
    assert "&lt;script&gt;" in text and "<script" not in text  # texts from files are escaped; no scripts
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # self-contained: nothing fetched
    assert "<th>beta</th><td>4.0</td>" in text and "<th>learning_rate</th><td>0.0001</td>" in text  # config


def test_headline_table_first_details_collapsed_times_apart(tmp_path):
    results = {
        **RESULTS,
        "eval.mean.mig.elapsed_s": 3.4,
        "untrained.eval.mean.mig.elapsed_s": 2.7,
        "eval.mean.dci.informativeness_train": 0.875,
    }
    html = render_report("r", {}, results, blank_figures(tmp_path))
    sections = re.findall(r'<section id="([a-z_]+)">', html)
    assert sections[:3] == ["headline", "latents", "traversals"]
    headline = section(html, "headline")
    row = re.search(r"<tr><th><a href=\"#details-mig\">MIG</a></th>(.*?)</tr>", headline).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells == ["0.213", "0.179", "0.031"]  # trained mean, trained sampled, untrained mean (3 decimals)
    assert "DCI disentanglement" in headline and "informativeness_train" not in headline  # headline keys only
    assert "<th>mean</th><th>sampled</th><th>mean</th>" in headline  # mean / sampled under trained / untrained
    details = section(html, "details")
    assert details.count("<details") == 2 and 'id="details-mig"' in details and 'id="details-dci"' in details
    assert "informativeness_train" in details and "elapsed_s" not in details
    timing = section(html, "timing")
    assert ">3.4<" in timing and ">2.7<" in timing and "Total: 6.1 s" in timing


def test_report_says_when_a_run_has_no_stored_matrix(tmp_path):
    # evaluated before the matrices were stored: say so, do not recompute or crash
    html = render_report("r", {}, RESULTS, blank_figures(tmp_path), stored={"mig": None, "dci": None})
    latents = section(html, "latents")
    assert "MIG was evaluated before untwine stored the matrices" in latents
    assert "DCI was evaluated before" in latents and "<img" not in latents
    fresh = section(render_report("r", {}, {"train.steps": 3}, blank_figures(tmp_path)), "latents")
    assert "not evaluated" in fresh and "--metrics mig" in fresh
    assert "No evaluation results yet" in section(render_report("r", {}, {}, blank_figures(tmp_path)), "headline")


def test_report_leaves_out_the_reference_named_duplicates(tmp_path):
    figures = blank_figures(tmp_path)
    results = {
        "eval.mean.mig.discrete_mig": 0.25,
        "reference.mean.mig.evaluation_results.discrete_mig": 0.25,
        "untrained.reference.mean.mig.evaluation_results.discrete_mig": 0.1,
        "note.extra": 3.0,
    }
    html = render_report("r", {}, results, figures)
    assert "evaluation_results" not in html and "note.extra" in html


# ---------------------------------------------------------------------------------------------------------------
# Pictures of what each latent captures


class PixelModel(torch.nn.Module):
    """A "model" whose encoder mean reads the factor pixels: latent i is factor i (perfectly disentangled)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(255.0))

    def encode(self, x):
        mean = x.flatten(1) * self.scale
        return mean, torch.full_like(mean, -20.0)


def rendered_matrix(html: str, name: str) -> tuple[list[str], list[str], np.ndarray]:
    """(row labels, column labels, values) of the numbers table under the heatmap `name`."""
    table = re.search(rf'<table class="matrix" data-matrix="{name}">(.*?)</table>', html, re.S).group(1)
    columns = re.findall(r"<th>([^<]*)</th>", re.search(r"<thead>(.*?)</thead>", table, re.S).group(1))[1:]
    body = re.search(r"<tbody>(.*?)</tbody>", table, re.S).group(1)
    rows = re.findall(r"<tr><th>([^<]*)</th>(.*?)</tr>", body, re.S)
    values = np.array([[float(v) for v in re.findall(r'<td class="num">([^<]*)</td>', cells)] for _, cells in rows])
    return [r for r, _ in rows], columns, values


def test_report_heatmaps_show_the_metrics_own_matrices(tmp_path):
    from factories import factor_pixels_dataset

    from untwine.evaluation import evaluate_model
    from untwine.evaluation.arrays import write_arrays
    from untwine.viz.report import stored_matrices

    data = factor_pixels_dataset((5, 8, 4))  # latent i reads factor i
    options = {"mig": {"num_train": 2000}, "dci": {"num_train": 400, "num_test": 200, "n_jobs": 1}}
    results = evaluate_model(PixelModel(), data, ["mig", "dci"], ["mean"], options=options)
    write_arrays(tmp_path, results.arrays, data.factor_names)
    html = render_report("r", {}, dict(results), blank_figures(tmp_path), stored_matrices(tmp_path))
    latents = section(html, "latents")
    assert latents.count("<img") == 2 and "evaluated before" not in latents

    rows, columns, mi = rendered_matrix(html, "mutual_info")
    assert rows == ["z0", "z1", "z2"] and columns == ["a", "b", "c"]
    metric_mi = results.arrays["eval.mean.mig.mutual_info"]  # the matrix MIG was computed from
    np.testing.assert_allclose(mi, metric_mi, atol=5e-5)  # shown to 4 decimals
    assert list(mi.argmax(axis=0)) == [0, 1, 2] and list(mi.argmax(axis=1)) == [0, 1, 2]  # diagonal dominant
    entropy = results.arrays["eval.mean.mig.factor_entropy"]
    np.testing.assert_allclose(np.diag(mi), entropy, atol=5e-5)  # z_i = v_i: I(z_i; v_i) = H(v_i)
    top = np.sort(mi, axis=0)[::-1]
    assert np.mean((top[0] - top[1]) / entropy) == pytest.approx(results["eval.mean.mig.discrete_mig"], abs=1e-4)

    marked = render_report(
        "r",
        {},
        dict(results),
        blank_figures(tmp_path),
        stored_matrices(tmp_path),
        None,
        {"inactive": [False, True, False]},
    )
    assert rendered_matrix(marked, "mutual_info")[0] == ["z0", "z1 (inactive)", "z2"]

    _, _, importance = rendered_matrix(html, "dci_importance")
    np.testing.assert_allclose(importance, results.arrays["eval.mean.dci.importance"], atol=5e-5)
    assert list(importance.argmax(axis=1)) == [0, 1, 2]
    np.testing.assert_allclose(importance.sum(axis=0), 1.0, atol=3e-4)  # GBT importances: columns sum to 1


def test_latent_kl_is_the_per_dimension_kl_term():
    from untwine.viz.latents import latent_kl

    class Fixed(torch.nn.Module):  # mean 1 and log-variance 0 in z0; mean 0, variance e^-2 in z1; the prior in z2
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def encode(self, x):
            n = len(x)
            mean = torch.tensor([1.0, 0.0, 0.0]).repeat(n, 1)
            return mean, torch.tensor([0.0, -2.0, 0.0]).repeat(n, 1)

    kl = latent_kl(Fixed(), torch.zeros(5, 1, 2, 2), batch_size=2)
    # KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1 - log s^2) / 2
    np.testing.assert_allclose(kl, [0.5, (np.exp(-2) - 1 + 2) / 2, 0.0], atol=1e-7)


def test_traversal_labels_and_greyed_inactive_rows(model):
    from untwine.viz.latents import INACTIVE_KL, captured_factors, latent_labels

    mi = np.array([[0.1, 2.0], [1.5, 0.2], [0.0, 0.0]])
    captures = captured_factors(mi, ["shape", "posX"])
    assert captures == ["posX", "shape", "shape"]
    labels, inactive = latent_labels([1.234, 0.5, INACTIVE_KL / 2], captures)
    assert labels == ["z0: posX (KL 1.23)", "z1: shape (KL 0.50)", "z2: inactive (KL 0.01)"]
    assert inactive == [False, False, True]
    assert latent_labels([0.3], None)[0] == ["z0 (KL 0.30)"]

    x = observations()[0]
    flags = [i in (2, 7) for i in range(10)]
    plain = traversal_grid(model, x, annotate=False)
    grey = traversal_grid(model, x, annotate=False, inactive=flags)
    row = slice(2 * 66, 2 * 66 + 64)
    expected = (0.3 * plain[row].astype(np.float64) + 0.7 * 255).astype(np.uint8)
    np.testing.assert_array_equal(grey[row, :64], expected[:, :64])  # row 2 blended 70% towards white
    np.testing.assert_array_equal(grey[:64], plain[:64])  # row 0 untouched
    names = [f"z{i}: some factor (KL 1.00)" for i in range(10)]
    labelled = traversal_grid(model, x, row_labels=names, inactive=flags)
    assert labelled.shape[1] > traversal_grid(model, x).shape[1]  # the margin widens to fit the labels
    with pytest.raises(InvalidInputError, match="row labels"):
        traversal_grid(model, x, row_labels=["z0"])


def test_traversal_labels_follow_the_stored_mutual_information(tmp_path, model):
    from untwine.evaluation.arrays import write_arrays
    from untwine.viz.report import _figures_current, figure_paths, latents_path

    run = make_run(tmp_path / "run", model)
    write_figures(run, dataset=tiny_dataset())
    drawn = json.loads(latents_path(run).read_text())
    assert drawn["captures"] is None and len(drawn["kl"]) == 10 and len(drawn["inactive"]) == 10
    assert _figures_current(run, figure_paths(run))
    mi = np.zeros((10, 2))
    mi[:5, 1] = 1.0
    mi[5:, 0] = 1.0
    write_arrays(run, {"eval.mean.mig.mutual_info": mi}, ("a", "b"))  # an evaluation after the figures
    assert not _figures_current(run, figure_paths(run))  # the labels are stale: write_report redraws
    write_figures(run, dataset=tiny_dataset())
    assert json.loads(latents_path(run).read_text())["captures"] == ["b"] * 5 + ["a"] * 5
    assert _figures_current(run, figure_paths(run))
    write_arrays(run, {"eval.mean.mig.mutual_info": mi[:, ::-1]}, ("a", "b"))
    config = TrainConfig.read(run.config_path).model_dump()
    TrainConfig(**{**config, "data_dir": str(tmp_path / "nowhere"), "dataset": "cars3d"}).write(run.config_path)
    text = write_report(run).read_text()  # the data set's files are gone: keep the figures, say so
    assert "The row labels predate the latest evaluation; redrawing them failed" in text


def test_downstream_accuracy_picture(tmp_path):
    results = {"eval.mean.mig.discrete_mig": 0.2}
    for size, acc in ((10, 0.3), (100, 0.6)):
        for k in range(2):
            results[f"eval.mean.downstream_boosted_trees.{size}:test_accuracy_factor_{k}"] = acc + k / 10
            results[f"eval.mean.downstream_boosted_trees.{size}:train_accuracy_factor_{k}"] = 1.0
    html = render_report("r", {"dataset": "dsprites"}, results, blank_figures(tmp_path))
    downstream = section(html, "downstream")
    assert downstream.count("<img") == 1 and "Downstream task (boosted trees)" not in downstream  # title in the PNG
    assert "downstream" not in re.findall(
        r'<section id="([a-z_]+)">', render_report("r", {}, RESULTS, blank_figures(tmp_path))
    )
