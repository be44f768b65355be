"""Color-, Noisy- and Scream-dSprites (spec §4.1): appearance drawn per observation from the batch generator."""

import numpy as np
import pytest
import torch
from PIL import Image

from untwine.config import TrainConfig
from untwine.data import get_dataset
from untwine.data.variants import ColorDSprites, NoisyDSprites, ScreamDSprites, load_scream
from untwine.errors import DataNotFoundError
from untwine.training import Trainer


def _draw(dataset, seed=0, n=16):
    factors = dataset.sample_factors(n, torch.Generator().manual_seed(seed))
    return factors, dataset.observations(factors, torch.Generator().manual_seed(seed + 100))


def test_color_dsprites_colours_the_sprite_per_image(dsprites):
    color = ColorDSprites(dsprites)
    factors, x = _draw(color)
    sprites = dsprites.observations(factors)
    assert x.shape == (16, 3, 64, 64) and color.factor_sizes == dsprites.factor_sizes
    assert torch.all(x[sprites.expand(-1, 3, -1, -1) == 0] == 0)  # black background
    for i in range(16):
        on = sprites[i, 0] > 0
        colour = x[i][:, on]  # [3, pixels]: one colour per image
        assert torch.all(colour == colour[:, :1]) and torch.all((colour >= 0.5) & (colour <= 1.0))
    again = color.observations(factors, torch.Generator().manual_seed(100))
    other = color.observations(factors, torch.Generator().manual_seed(101))
    assert torch.equal(x, again) and not torch.equal(x, other)  # reproducible, and re-drawn per call


def test_noisy_dsprites_white_sprite_on_noise(dsprites):
    noisy = NoisyDSprites(dsprites)
    factors, x = _draw(noisy)
    on = dsprites.observations(factors).expand(-1, 3, -1, -1) > 0
    assert torch.all(x[on] == 1.0)
    background = x[~on]
    assert 0.0 <= background.min() and background.max() < 1.0
    assert abs(background.mean().item() - 0.5) < 0.01 and abs(background.var().item() - 1 / 12) < 0.005


def test_scream_dsprites_patches_and_inversion(tmp_path, dsprites):
    (tmp_path / "scream").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (600, 480, 3), dtype=np.uint8)).save(tmp_path / "scream" / "scream.jpg")
    painting = load_scream(tmp_path)
    assert painting.shape[0] == 3 and painting.shape[1] <= 274 and painting.shape[2] <= 350
    assert painting.shape[1] == 274  # 480 x 600 fitted within 350 x 274 keeps the aspect ratio: height-bound
    scream = ScreamDSprites(dsprites, painting)
    factors, x = _draw(scream)
    assert x.shape == (16, 3, 64, 64) and 0.0 <= x.min() and x.max() <= 1.0
    # the background (patch + c) / 2 and the inverted sprite are checked exactly on a one-colour painting below
    dataset = get_dataset("scream_dsprites", tmp_path)
    assert dataset.observation_shape == (3, 64, 64)


def test_scream_dsprites_on_a_one_colour_painting(tmp_path, dsprites):
    """With a constant painting p every patch is p, so each image's background is one colour b = (p + c) / 2 with
    its random c in [0, 1]^3, and its sprite pixels are exactly 1 - b."""
    (tmp_path / "scream").mkdir()
    Image.new("RGB", (300, 240), (200, 90, 30)).save(tmp_path / "scream" / "scream.jpg")
    painting = load_scream(tmp_path)
    p = painting[:, 0, 0]
    assert torch.all(painting == p[:, None, None]), "a one-colour JPEG decodes to one colour"
    assert torch.allclose(p, torch.tensor([200, 90, 30]) / 255.0, atol=3 / 255)
    factors, x = _draw(ScreamDSprites(dsprites, painting), n=32)
    on = dsprites.observations(factors)[:, 0] > 0.5  # [n, 64, 64]
    colours = []
    for i in range(32):
        background, sprite = x[i][:, ~on[i]], x[i][:, on[i]]  # [3, pixels]
        b = background[:, :1]
        assert torch.all(background == b), "one background colour per image"
        assert torch.allclose(sprite, 1.0 - b.expand_as(sprite), atol=1e-6), "inverted sprite"
        c = 2 * b[:, 0] - p
        assert torch.all((c > -1e-6) & (c < 1 + 1e-6))
        colours.append(c)
    colours = torch.stack(colours)
    assert len({tuple(c.tolist()) for c in colours}) == 32, "c is drawn per image"
    assert 0.3 < colours.mean() < 0.7  # c ~ U(0, 1)^3: mean 1/2 over 96 draws


def test_scream_painting_is_fitted_as_the_reference_pillow_did(tmp_path):
    (tmp_path / "scream").mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (1236, 1000, 3), dtype=np.uint8)).save(tmp_path / "scream" / "scream.jpg")
    painting = load_scream(tmp_path)
    # Pillow <= 6: y = int(1236 * 350 / 1000) = 432, then x = int(350 * 274 / 432) = 221 (today's Pillow: 222)
    assert painting.shape == (3, 274, 221)


def test_scream_without_the_painting_says_where_to_put_it(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"scream/scream\.jpg"):
        get_dataset("scream_dsprites", tmp_path)


def test_a_variant_trains(tmp_path, dsprites):
    config = TrainConfig(dataset="color_dsprites", steps=2, batch_size=4, architecture="fc")
    summary = Trainer(config, tmp_path / "run", dataset=ColorDSprites(dsprites)).train()
    assert summary["train.global_step"] == 2


def test_dsprites_noshape_draws_shape_as_a_nuisance(dsprites):
    noshape = get_dataset("dsprites_noshape")
    assert noshape.factor_sizes == dsprites.factor_sizes[1:] and noshape.factor_names == dsprites.factor_names[1:]
    factors = torch.tensor([[5, 0, 16, 16]] * 64)  # largest scale, fixed pose: only the shape may vary
    images = noshape.observations(factors, torch.Generator().manual_seed(0))
    areas = images.sum(dim=(1, 2, 3)).unique()
    assert len(areas) == 3  # the three shapes, drawn per observation
    shapes = [dsprites.observations(torch.tensor([[s, 5, 0, 16, 16]])).sum().item() for s in range(3)]
    assert sorted(areas.tolist()) == sorted(shapes)


def test_dummy_data_is_noise_independent_of_the_factors():
    dummy = get_dataset("dummy_data")
    assert dummy.factor_sizes == (5,) * 10 and dummy.observation_shape == (1, 64, 64)
    factors = torch.zeros(4, 10, dtype=torch.long)
    x = dummy.observations(factors, torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 64, 64) and 0.0 <= x.min() and x.max() < 1.0
    assert not torch.equal(x[0], x[1])  # same factors, different observations
    assert torch.equal(x, dummy.observations(factors, torch.Generator().manual_seed(0)))
