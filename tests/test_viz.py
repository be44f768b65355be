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
from untwine.viz.report import metric_table


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


def test_metric_table_puts_untrained_beside_trained():
    table = metric_table(RESULTS)
    row = re.search(r"<tr>.*?MIG.*?discrete_mig.*?</tr>", table).group(0)
    assert "0.2134" in row and "0.03125" in row
    assert "Representation: mean" in table and "Representation: sampled" in table
    assert table.index("Representation: mean") < table.index("Representation: sampled")
    assert "No evaluation results" in metric_table({"train.steps": 3})


def test_report_leaves_out_the_reference_named_duplicates(tmp_path):
    from PIL import Image

    from untwine.viz.report import FIGURES, render_report

    figures = {}
    for name, (file, _, _) in FIGURES.items():
        figures[name] = tmp_path / file
        Image.new("RGB", (4, 4), "white").save(figures[name])
    results = {
        "eval.mean.mig.discrete_mig": 0.25,
        "reference.mean.mig.evaluation_results.discrete_mig": 0.25,
        "untrained.reference.mean.mig.evaluation_results.discrete_mig": 0.1,
        "note.extra": 3.0,
    }
    html = render_report("r", {}, results, figures)
    assert "evaluation_results" not in html and "note.extra" in html
