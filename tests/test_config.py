import pytest

from untwine.config import TrainConfig
from untwine.errors import InvalidInputError


def test_reference_defaults():
    c = TrainConfig()
    assert (c.batch_size, c.learning_rate, c.adam_beta1, c.adam_beta2, c.adam_eps) == (64, 1e-4, 0.9, 0.999, 1e-8)
    assert (c.steps, c.latent_dim, c.architecture) == (300_000, 10, "conv")


def test_roundtrip_through_toml(tmp_path):
    c = TrainConfig.build(beta=6.0, seed=3, steps=10, data_dir="/data")
    c.write(tmp_path / "config.toml")
    assert TrainConfig.read(tmp_path / "config.toml") == c


@pytest.mark.parametrize(
    "values,message",
    [
        ({"method": "vae", "beta": 2.0}, "beta = 1"),
        ({"beta": -1.0}, "beta"),
        ({"architecture": "resnet"}, "unknown architecture"),
        ({"batch_size": 0}, "batch_size"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_invalid_configs_give_one_line(values, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        TrainConfig.build(**values)
    assert "\n" not in str(info.value)


def test_corrupt_config_file(tmp_path):
    (tmp_path / "config.toml").write_text("beta = [unclosed")
    with pytest.raises(InvalidInputError, match="not valid TOML"):
        TrainConfig.read(tmp_path / "config.toml")
