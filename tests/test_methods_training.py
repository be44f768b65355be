"""The six methods in the trainer: config defaults, FactorVAE's two-optimiser step, step counting, the study preset."""

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from untwine.cli import main
from untwine.config import METHODS, TrainConfig
from untwine.data import StoredDataset
from untwine.errors import InvalidInputError
from untwine.methods.factor_vae import discriminator_loss, factor_vae_loss, permute_dims
from untwine.runs import RunDir
from untwine.seeding import make_generator
from untwine.study.grid import UNSUPERVISED_STUDY_V1, model_from_num, model_num, run_name, study_config
from untwine.training import Trainer

SMALL = {"architecture": "fc", "batch_size": 8, "log_every": 1}


# --- config ---------------------------------------------------------------------------------------------------------


def test_method_defaults_are_the_first_grid_value_and_the_study_settings():
    assert TrainConfig(method="factor_vae").hyperparameters() == {"gamma": 10.0}
    factor = TrainConfig(method="factor_vae")
    assert (factor.discriminator_learning_rate, factor.discriminator_adam_beta1, factor.discriminator_adam_beta2) == (
        1e-4,
        0.5,
        0.9,
    )
    assert factor.double_count_steps is False
    assert TrainConfig(method="annealed_vae").hyperparameters() == {
        "gamma": 1000.0,
        "c_max": 5.0,
        "iteration_threshold": 100_000,
    }
    assert TrainConfig(method="dip_vae_i").lambda_d_factor == 10.0
    assert TrainConfig(method="dip_vae_ii").lambda_d_factor == 1.0
    assert TrainConfig(method="beta_tc_vae").method == "beta_tcvae"  # the reference's name is accepted
    assert TrainConfig(method="beta_tcvae").tc_estimator == "reference"


def test_settings_of_another_method_are_rejected():
    with pytest.raises(InvalidInputError, match="factor_vae has no hyperparameter beta"):
        TrainConfig.build(method="factor_vae", beta=4.0)
    with pytest.raises(InvalidInputError, match="tc_estimator is a beta_tcvae setting"):
        TrainConfig.build(method="beta_vae", tc_estimator="mss")
    with pytest.raises(InvalidInputError, match="unknown tc_estimator"):
        TrainConfig.build(method="beta_tcvae", tc_estimator="exact")
    with pytest.raises(InvalidInputError, match="double_count_steps is a factor_vae setting"):
        TrainConfig.build(method="beta_vae", double_count_steps=True)


def test_configs_round_trip_through_toml(tmp_path):
    for method in METHODS:
        config = TrainConfig(method=method)
        config.write(tmp_path / f"{method}.toml")
        assert TrainConfig.read(tmp_path / f"{method}.toml") == config


# --- training ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,extra",
    [
        ("annealed_vae", {"capacity"}),
        ("factor_vae", {"total_correlation", "discriminator_loss"}),
        ("beta_tcvae", {"total_correlation", "elbo"}),
        ("dip_vae_i", {"dip_regularizer", "elbo"}),
        ("dip_vae_ii", {"dip_regularizer", "elbo"}),
    ],
)
def test_every_method_trains_and_logs_its_terms(method, extra, tmp_path, dsprites):
    run = RunDir(tmp_path / method)
    Trainer(TrainConfig(method=method, steps=3, **SMALL), run, dataset=dsprites).train()
    log = run.read_log()
    assert [r["step"] for r in log] == [1, 2, 3]
    assert {"loss", "reconstruction_loss", "kl_loss", "regularizer"} | extra <= set(log[-1])
    assert all(
        abs(r["loss"] - r["reconstruction_loss"] - (r["regularizer"])) < 1e-3 * r["loss"]
        for r in log
        if method != "annealed_vae"
    )
    model = run.load_model("final")
    assert not torch.equal(
        model.encoder.state_dict()[next(iter(model.encoder.state_dict()))],
        run.load_model("untrained").encoder.state_dict()[next(iter(model.encoder.state_dict()))],
    )


@pytest.mark.parametrize(
    "method, settings, tc_estimator",
    [
        ("beta_tcvae", {"beta": 6.0}, "mws"),  # Chen et al.'s constants with N = len(dataset) = 737,280
        ("beta_tcvae", {"beta": 6.0}, "mss"),  # stratified weights with the same N
        ("beta_tcvae", {"beta": 6.0}, "reference"),
        ("dip_vae_i", {"lambda_od": 2.0, "lambda_d_factor": 7.0}, None),
        ("dip_vae_ii", {"lambda_od": 3.0, "lambda_d_factor": 0.5}, None),
        ("beta_tcvae", {"beta": 6.0}, "mss-tiny"),  # N = 12 images: the stratified weights depend strongly on N
    ],
)
def test_the_trainer_hands_the_config_to_the_objective(method, settings, tc_estimator, tmp_path, dsprites):
    """One trainer step logs the regularizer computed by hand (numpy, float64) on the same batch: the config's
    hyperparameters and tc_estimator reach the objective, and the TC estimators get N = the data set's size."""
    from test_objectives import _hand_regularizer

    dataset = dsprites
    if tc_estimator == "mss-tiny":
        tc_estimator = "mss"
        images = torch.from_numpy(np.random.default_rng(0).integers(0, 2, (12, 1, 64, 64), dtype=np.uint8) * 255)
        dataset = StoredDataset("tiny", images, (3, 4), ("a", "b"), (1, 64, 64))
    extra = {"tc_estimator": tc_estimator} if tc_estimator else {}
    config = TrainConfig(method=method, steps=1, **settings, **extra, **SMALL)
    trainer = Trainer(config, tmp_path / "r", dataset=dataset)
    model = copy.deepcopy(trainer.model)
    data, noise = (make_generator(config.seed, s) for s in ("data", "noise"))
    _, x = dataset.sample(config.batch_size, data)
    with torch.no_grad():
        mean, logvar, z, _ = model(x, noise)
    arrays = [t.double().numpy() for t in (mean, logvar, z)]
    expected = _hand_regularizer(method, config.hyperparameters(), *arrays, 0.0, len(dataset), tc_estimator)
    trainer.train()
    logged = RunDir(tmp_path / "r").read_log()[0]["regularizer"]
    assert logged == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_annealed_capacity_follows_the_global_step(tmp_path, dsprites):
    run = RunDir(tmp_path / "a")
    config = TrainConfig(method="annealed_vae", c_max=8.0, iteration_threshold=4, steps=6, **SMALL)
    Trainer(config, run, dataset=dsprites).train()
    # C(t) = min(c_max, c_max t / threshold) at the step before each update: 0, 2, 4, 6, 8, 8
    assert [r["capacity"] for r in run.read_log()] == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0, 8.0])


def test_factor_vae_step_is_the_reference_simultaneous_update(tmp_path, dsprites):
    """One trainer step equals: both losses from one forward pass, VAE gradients only to encoder/decoder,
    discriminator gradients only to the discriminator, then both Adam steps."""
    config = TrainConfig(method="factor_vae", gamma=30.0, steps=1, **SMALL)
    trainer = Trainer(config, tmp_path / "f", dataset=dsprites)
    model, disc = copy.deepcopy(trainer.model), copy.deepcopy(trainer.discriminator)
    data, noise = (make_generator(config.seed, s) for s in ("data", "noise"))
    permute = make_generator(config.seed, "permute")
    _, x = dsprites.sample(config.batch_size, data)
    mean, logvar, z, logits = model(x, noise)
    vae_loss = factor_vae_loss(logits, x, mean, logvar, z, 30.0, disc)["loss"]
    d_loss = discriminator_loss(disc, z, permute_dims(z, permute))["loss"]
    vae_grads = torch.autograd.grad(vae_loss, list(model.parameters()))
    disc_grads = torch.autograd.grad(d_loss, list(disc.parameters()))
    for params, grads, (lr, betas) in (
        (model.parameters(), vae_grads, (1e-4, (0.9, 0.999))),
        (disc.parameters(), disc_grads, (1e-4, (0.5, 0.9))),
    ):
        params = list(params)
        for p, g in zip(params, grads):
            p.grad = g
        torch.optim.Adam(params, lr=lr, betas=betas).step()
    trainer.train()
    for mine, theirs in ((trainer.model, model), (trainer.discriminator, disc)):
        for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-7), name


def test_factor_vae_resumes_to_the_same_weights_and_counts_double_steps(tmp_path, dsprites):
    config = TrainConfig(method="factor_vae", steps=8, checkpoint_every=4, double_count_steps=True, **SMALL)
    Trainer(config, tmp_path / "straight", dataset=dsprites).train()
    log = RunDir(tmp_path / "straight").read_log()
    assert [r["step"] for r in log] == [2, 4, 6, 8]  # 4 iterations, the reference's global step
    half = config.model_copy(update={"steps": 4})
    Trainer(half, tmp_path / "resumed", dataset=dsprites).train()
    Trainer(config, tmp_path / "resumed", dataset=dsprites).train(resume=True)
    for file in ("model.safetensors", "discriminator.safetensors"):
        a = load_file(RunDir(tmp_path / "straight").checkpoint_path("final") / file)
        b = load_file(RunDir(tmp_path / "resumed").checkpoint_path("final") / file)
        assert all(torch.equal(a[k], b[k]) for k in a), file


# --- the study preset -----------------------------------------------------------------------------------------------


def test_preset_gives_the_study_model():
    values = study_config("unsupervised_study_v1", "factor_vae", 3, 7)
    assert values == {
        "method": "factor_vae",
        "gamma": 40.0,
        "double_count_steps": True,
        "seed": 7,
        "dataset": "dsprites",
        "steps": 300_000,
    }
    annealed = TrainConfig(**study_config("unsupervised_study_v1", "annealed_vae", 5, 0, "shapes3d"))
    assert annealed.hyperparameters() == {"gamma": 1000.0, "c_max": 100.0, "iteration_threshold": 100_000}
    assert TrainConfig(**study_config("unsupervised_study_v1", "dip_vae_ii", 2, 0)).hyperparameters() == {
        "lambda_od": 5.0,
        "lambda_d_factor": 1.0,
    }
    assert study_config("unsupervised_study_v1", "beta_tc_vae", 1, 0)["beta"] == 2.0
    with pytest.raises(InvalidInputError, match="value index 6 is out of range"):
        study_config("unsupervised_study_v1", "beta_vae", 6, 0)
    with pytest.raises(InvalidInputError, match="seeds 0..49"):
        study_config("unsupervised_study_v1", "beta_vae", 0, 50)
    with pytest.raises(InvalidInputError, match="unknown preset"):
        study_config("study_v2", "beta_vae", 0, 0)


def test_model_numbers_follow_the_reference_index():
    assert UNSUPERVISED_STUDY_V1.num_models == 12_600
    assert model_num("unsupervised_study_v1", "beta_vae", 0, 0) == 0
    assert model_num("unsupervised_study_v1", "beta_vae", 5, 49) == 299  # 0..299: beta-VAE on dSprites
    assert model_num("unsupervised_study_v1", "beta_vae", 0, 0, "shapes3d") == 10_800
    assert model_num("unsupervised_study_v1", "factor_vae", 3, 7, "color_dsprites") == 1800 + 50 * (6 + 3) + 7
    for num in range(0, 12_600, 7):
        found = model_from_num("unsupervised_study_v1", num)
        assert (
            model_num("unsupervised_study_v1", found["method"], found["value_index"], found["seed"], found["dataset"])
            == num
        )


def test_cli_preset_and_sweeps(tmp_path, capsys):
    out = tmp_path / "study"
    assert (
        main(
            [
                "train",
                "--preset",
                "unsupervised_study_v1",
                "--method",
                "factor_vae",
                "--value-index",
                "3",
                "--seed",
                "7",
                "--steps",
                "2",
                "--batch-size",
                "4",
                "--architecture",
                "fc",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    config = RunDir(out).config()
    assert (config.method, config.gamma, config.seed, config.double_count_steps) == ("factor_vae", 40.0, 7, True)
    sweep = tmp_path / "sweep"
    assert (
        main(
            [
                "train",
                "--method",
                "beta_tcvae",
                "--beta",
                "1,2",
                "--seeds",
                "0-1",
                "--steps",
                "1",
                "--batch-size",
                "4",
                "--architecture",
                "fc",
                "--out",
                str(sweep),
            ]
        )
        == 0
    )
    names = sorted(p.name for p in sweep.iterdir())
    assert names == [
        "beta_tcvae-beta1-seed0",
        "beta_tcvae-beta1-seed1",
        "beta_tcvae-beta2-seed0",
        "beta_tcvae-beta2-seed1",
    ]
    config = RunDir(sweep / "beta_tcvae-beta2-seed1").config()
    assert (config.beta, config.seed) == (2.0, 1) and run_name(config) == "beta_tcvae-beta2-seed1"
    assert json.loads((sweep / names[0] / "results.json").read_text())["train.global_step"] == 1
    capsys.readouterr()
    assert main(["train", "--method", "factor_vae", "--beta", "2", "--out", str(tmp_path / "x")]) == 2
    assert "factor_vae has no hyperparameter beta" in capsys.readouterr().err
    assert main(["train", "--seeds", "3-1", "--out", str(tmp_path / "y")]) == 2
    assert main(["train", "--value-index", "1", "--out", str(tmp_path / "z")]) == 2
    assert main(["train", "--beta", "1,2", "--stack-size", "0", "--out", str(tmp_path / "w")]) == 2
