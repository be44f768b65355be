"""The parts of PBT-VAE / rPU-VAE around the Ray Tune driver that need no Ray: the objective's single-sample KL
option, subsets of a data set, the fitness functions on models whose codes are known, a UDR member (k models on
the same batches), the diverged-interval retry, settings checks, the leaf-run recursion on known labels, and the
report's generation table. (The driver on Ray itself: test_pbt_ray.py.)"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from factories import factor_pixels_dataset

from untwine.data import get_dataset
from untwine.data.subset import SubsetDataset
from untwine.errors import InvalidInputError
from untwine.methods.beta_tcvae import beta_tcvae_loss
from untwine.selection.fitness import mig_fitness, parse_fitness, score, udr_fitness
from untwine.selection.pbt import (
    EXPLORER_META,
    PBTSettings,
    _Driver,
    _open,
    _units,
    build_bundle,
    load_records,
    round_dir,
    train_interval,
)
from untwine.selection.pbt_schedule import Hyperparameters
from untwine.selection.rpu import RPUSettings, leaf_run
from untwine.selection.rpu_reduction import labelling_from_encodings
from untwine.viz.pbt_report import generation_table


class CodeModel(torch.nn.Module):
    """A "trained" encoder for `factor_pixels_dataset`: latent j = scale_j x factor (j mod K) (the pixels hold the
    factor indices), with log-variance logvar_j."""

    def __init__(self, scales, logvars):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.scales, self.logvars = torch.tensor(scales), torch.tensor(logvars)

    def encode(self, x):
        pixels = x.flatten(1) * 255.0
        mean = pixels[:, torch.arange(len(self.scales)) % pixels.shape[1]] * self.scales
        return mean, self.logvars.expand_as(mean).clone()


# --- the objective's KL estimate (spec §1.2: Chen et al.'s code) ---------------------------------------------------


def test_sample_kl_is_log_q_minus_log_p_at_the_sample():
    # mean 1, logvar 0, z = 1: log q = -1/2 log 2 pi, log p = -1/2 - 1/2 log 2 pi -> 1/2 per latent, 3 latents
    mean, logvar, z = torch.ones(1, 3), torch.zeros(1, 3), torch.ones(1, 3)
    x = torch.zeros(1, 4)
    terms = beta_tcvae_loss(torch.zeros(1, 4), x, mean, logvar, z, beta=1.0, kl_estimator="sample")
    assert terms["kl_loss"].item() == pytest.approx(1.5)
    analytic = beta_tcvae_loss(torch.zeros(1, 4), x, mean, logvar, z, beta=1.0)
    assert analytic["kl_loss"].item() == pytest.approx(1.5)  # 1/2 mu^2 per latent: equal here by construction


def test_sample_kl_averages_to_the_analytic_kl():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.full((200, 1), 0.7), torch.full((200, 1), math.log(0.25))
    x = torch.zeros(len(mean), 1)
    estimates = []
    for _ in range(100):  # 20,000 samples in batches of 200
        z = mean + torch.exp(logvar / 2) * torch.randn(mean.shape, generator=g)
        terms = beta_tcvae_loss(torch.zeros_like(x), x, mean, logvar, z, kl_estimator="sample")
        estimates.append(terms["kl_loss"].item())
    sample = float(np.mean(estimates))
    expected = 0.5 * (0.7**2 + 0.25 - math.log(0.25) - 1)  # KL(N(0.7, 0.25) || N(0, 1))
    assert sample == pytest.approx(expected, abs=0.03)  # the estimate's sd is ~1: ~0.007 over 20,000 samples
    with pytest.raises(InvalidInputError, match="kl_estimator"):
        beta_tcvae_loss(torch.zeros_like(x), x, mean, logvar, z, kl_estimator="bogus")


# --- subsets ------------------------------------------------------------------------------------------------------


def test_subset_dataset_samples_only_its_grid_points():
    base = factor_pixels_dataset((3, 4))
    subset = SubsetDataset(base, [1, 5, 9])  # factors (0, 1), (1, 1), (2, 1)
    assert len(subset) == 3
    assert subset.factors().tolist() == [[0, 1], [1, 1], [2, 1]]
    factors, images = subset.sample(300, torch.Generator().manual_seed(0))
    assert set(map(tuple, factors.tolist())) == {(0, 1), (1, 1), (2, 1)}
    assert torch.equal(images.flatten(1) * 255, factors.float())
    with pytest.raises(InvalidInputError):
        SubsetDataset(base, [12])


# --- fitness --------------------------------------------------------------------------------------------------------


def test_parse_fitness():
    assert parse_fitness("mig").num_points == 50_000
    assert parse_fitness("mig:1000").num_points == 1000 and parse_fitness("mig:1000").label == "mig:1000"
    assert parse_fitness("udr").models_per_member == 5
    for bad in ("bogus", "mig:x", "mig:3"):
        with pytest.raises(InvalidInputError):
            parse_fitness(bad)


def test_mig_fitness_of_a_perfect_encoder_is_one():
    # each latent is one factor: on the full grid (all 40 points) the factors are independent, so for each
    # factor top1 MI = H(factor) and top2 = 0 -> MIG = 1 exactly
    dataset = factor_pixels_dataset((5, 8))
    model = CodeModel([1.0, 1.0], [0.0, 0.0])
    assert mig_fitness(model, dataset, 40)["fitness"] == pytest.approx(1.0)
    swapped = CodeModel([1.0, 0.0], [0.0, 0.0])  # only factor 0 encoded: factor 1's gap is 0 -> MIG = 1/2
    assert mig_fitness(swapped, dataset, 40)["fitness"] == pytest.approx(0.5)


def test_udr_fitness_of_known_codes():
    dataset = factor_pixels_dataset((5, 8))
    # the same two factors in another order and sign: UDR's reference test range [0.8, 1]
    a, b = CodeModel([1.0, 1.0, 0.0], [-6.0, -6.0, 0.0]), CodeModel([3.0, -2.0, 0.0], [-6.0, -6.0, 0.0])
    result = udr_fitness([a, b], dataset, 40)
    assert 0.8 <= result["fitness"] <= 1.0
    # the third latent (mean 0, log sigma 0) has "KL" 0 under the rPU code's estimate; a mean-0 latent with log
    # sigma -3 would count as informative (0.5 (e^3 - 3 - 1) = 8: the quirk of spec §1.4a)
    assert result["num_informative"] == [2, 2]
    # a member one of whose models has no informative latent (mean 0, log sigma 0: "KL" 0): every pair scores 0
    empty = CodeModel([0.0, 0.0, 0.0], [0.0] * 3)
    assert udr_fitness([a, empty], dataset, 40)["fitness"] == 0.0


def test_a_fitness_that_cannot_be_computed_scores_zero_with_its_reason():
    dataset = factor_pixels_dataset((5, 8))
    nan = CodeModel([float("nan")] * 2, [0.0, 0.0])
    result = score(parse_fitness("udr:40"), [nan, nan], dataset)
    assert result["fitness"] == 0.0 and "finite" in result["error"]


# --- a UDR member: k models on the same batches ---------------------------------------------------------------------

SMALL = dict(dataset="dummy_data", architecture="fc", latent_dim=3, fitness="udr:20", population=2, generations=2)


def test_bundle_models_share_batches_but_not_initialisation_or_noise(tmp_path):
    settings = PBTSettings(**SMALL, models_per_member=3)
    dataset = get_dataset("dummy_data")
    bundle = build_bundle(settings, tmp_path, 0, Hyperparameters(1e-3, 8, 2), dataset)
    assert len(bundle.members) == 3
    weights = [next(m.model.parameters()).detach().clone() for m in bundle.members]
    assert not torch.equal(weights[0], weights[1])
    bundle.train_samples(20)  # batches of 8, 8, 4
    data = [m.trainer.generators["data"].get_state() for m in bundle.members]
    noise = [m.trainer.generators["noise"].get_state() for m in bundle.members]
    assert all(torch.equal(data[0], d) for d in data[1:])  # the same draws from the same start: same batches
    assert not torch.equal(noise[0], noise[1])
    assert bundle.samples == 20 and [h["samples"] for h in [bundle.record(round=0)]] == [20]
    # save/load round trip of all k models
    bundle.save(tmp_path / "saved")
    other = build_bundle(settings, tmp_path / "other", 1, Hyperparameters(1e-2, 16, 5), dataset)
    other.load(tmp_path / "saved")
    assert other.hyperparameters == bundle.hyperparameters
    for mine, theirs in zip(bundle.members, other.members):
        assert torch.equal(next(mine.model.parameters()), next(theirs.model.parameters()))
    assert udr_fitness(bundle.models, dataset, 20)["best_model"] in range(3)


def test_a_diverging_interval_is_retried_then_dropped_with_its_reason(tmp_path):
    settings = PBTSettings(**SMALL, models_per_member=2)
    bundle = build_bundle(settings, tmp_path, 0, Hyperparameters(1e-3, 8, 2), get_dataset("dummy_data"))
    before = [p.detach().clone() for p in bundle.members[1].model.parameters()]
    for m in bundle.members:
        m.trainer.config = m.trainer.config.model_copy(update={"divergence_threshold": 1e-9})
    seeds = []
    summary, failures, reason = train_interval(bundle, 16, 3, lambda attempt: seeds.append(attempt) or attempt)
    assert (summary, failures) == ({}, 4) and seeds == [1, 2, 3]  # 1 try + 3 retries, each with fresh streams
    assert reason.startswith("diverged 4 times")
    after = list(bundle.members[1].model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # the state of the interval's start
    for m in bundle.members:
        m.trainer.config = m.trainer.config.model_copy(update={"divergence_threshold": 1e10})
    summary, failures, reason = train_interval(bundle, 16, 3, lambda attempt: attempt)
    assert reason is None and failures == 0 and summary["samples"] == 16


# --- settings and resuming ------------------------------------------------------------------------------------------


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="too small"):
        PBTSettings(population=1)
    with pytest.raises(InvalidInputError, match="unknown fitness"):
        PBTSettings(fitness="elbo")
    with pytest.raises(InvalidInputError, match="models_per_member"):
        PBTSettings(fitness="udr", models_per_member=1)
    _open(tmp_path / "p", PBTSettings(**SMALL))[0].close()
    with pytest.raises(InvalidInputError, match="different settings"):
        _open(tmp_path / "p", PBTSettings(**{**SMALL, "population": 3}))


def test_a_resumed_member_starts_from_its_exploit_source(tmp_path):
    settings = PBTSettings(**{**SMALL, "population": 5})
    store, explorer, _ = _open(tmp_path / "p", settings)
    store.close()
    fresh = _units(tmp_path / "p", explorer)
    assert [u["start_from"] for u in fresh] == [None] * 5 and {u["start_round"] for u in fresh} == {0}
    result = explorer.step({0: 0.1, 1: 0.5, 2: 0.2, 3: 0.3, 4: 0.4})  # k = 1: member 0 copies member 1
    (exploit,) = result.exploits
    units = {u["member"]: u for u in _units(tmp_path / "p", explorer)}
    assert units[0]["start_from"].endswith("m1/round-000")
    assert units[0]["hyperparameters"] == exploit.hyperparameters.as_dict()
    assert units[2]["start_from"].endswith("m2/round-000") and units[2]["start_round"] == 1


def _barrier(tmp_path, exploit: bool):
    settings = PBTSettings(**{**SMALL, "population": 5, "exploit": exploit})
    out = tmp_path / ("pbt" if exploit else "random")
    store, explorer, best = _open(out, settings)
    driver = _Driver(out, settings, explorer, store, best)
    before = dict(explorer.hyperparameters)
    results = {}
    for m, fitness in enumerate([0.1, 0.5, 0.2, 0.3, 0.4]):
        round_dir(out, m, 0).mkdir(parents=True)
        (round_dir(out, m, 0) / "model-0").mkdir()
        results[m] = {"round": 0, "fitness": fitness, **before[m].as_dict()}
    result = driver.barrier(results)
    assert driver.barrier(results) is None  # a generation is processed once
    store.close()
    return out, before, explorer, result


def test_the_barrier_stores_the_generation_with_the_explorer_state(tmp_path):
    out, before, explorer, result = _barrier(tmp_path, exploit=True)
    (exploit,) = result.exploits
    assert (exploit.target, exploit.source) == (0, 1)  # k = 1: the worst copies the best
    records = load_records(out)
    assert sorted(records.query("key == 'fitness'").value) == [0.1, 0.2, 0.3, 0.4, 0.5]
    (event,) = records.query("key == 'exploit'").value
    assert event["source"] == 1 and records.query("key == 'exploit'").model_id.tolist() == ["m0"]
    from untwine.study.store import ResultStore

    with ResultStore(out / "study.sqlite") as store:
        assert store.meta(EXPLORER_META)["explorer"]["round"] == 1
        assert store.meta(EXPLORER_META)["best"]["member"] == 1
    assert (out / "best" / "model-0").is_dir()
    assert explorer.hyperparameters[0] == exploit.hyperparameters != before[0]


def test_random_search_keeps_every_member_own_values(tmp_path):
    out, before, explorer, result = _barrier(tmp_path, exploit=False)
    assert result.exploits == [] and explorer.hyperparameters == before
    assert load_records(out).query("key == 'exploit'").empty


def test_reproduction_settings_exist_at_both_scales():
    from untwine.reproduce.estermann2020 import APPROACHES, scale_settings

    for scale in ("cpu", "paper"):
        settings = scale_settings(scale)
        assert set(APPROACHES) <= set(settings)
        assert settings["random_search"].exploit is False and settings["pbt_s_1000"].fitness == "mig:1000"
    assert scale_settings("paper")["pbt_s"].population == 56
    with pytest.raises(InvalidInputError):
        scale_settings("laptop")


# --- rPU-VAE's leaf run on known labels -----------------------------------------------------------------------------


@pytest.mark.parametrize("boundaries", ["gap", "code"])
def test_a_leaf_run_fixes_the_factor_the_model_learned(boundaries):
    """Grid a (3 values) x b (20 values), 60 images. The x-model encodes a sharply (log sigma -10: active) and
    nothing else (mean 0, log sigma 0: "KL" 0): its labels are 3 clusters of 20 -> 2 gap peaks; one latent and 2
    peaks give one interval (the middle cluster, edges are only added with several latents): a = 1. With the
    corrected boundaries it is exactly those 20 images; the code's boundaries (spec §1.10) take the last image
    before the left peak and drop the cluster's last image."""
    base = factor_pixels_dataset((3, 20))
    images = base.observations(base.index_to_factors(torch.arange(60)))
    x_model = CodeModel([1.0, 0.0], [-20.0, 0.0])
    means, logvar = x_model.encode(images)
    level0 = labelling_from_encodings(means.numpy(), (logvar / 2).numpy())
    assert level0.active.tolist() == [0]
    trained = []

    def train_and_label(grid, iteration):  # the level's "trained" model encodes factor b only
        trained.append(grid.copy())
        subset_images = base.observations(base.index_to_factors(torch.as_tensor(grid)))
        m, lv = CodeModel([0.0, 1.0], [0.0, -20.0]).encode(subset_images)
        return labelling_from_encodings(m.numpy(), (lv / 2).numpy()), "max_epoch"

    settings = RPUSettings(levels=3, boundaries=boundaries)
    chain, leaf, levels = leaf_run(base, level0, 0, settings, train_and_label)
    (grid,) = trained
    a_values = base.index_to_factors(torch.as_tensor(grid))[:, 0].tolist()
    if boundaries == "gap":
        assert sorted(a_values) == [1] * 20 and levels[0]["fixed"] == ["a"]
    else:
        assert len(a_values) == 20 and a_values.count(1) == 19 and a_values.count(0) == 1
    assert levels[0]["size"] == 20 and levels[0]["active"]["latents"] == [1]
    # level 1's labels (b: 20 distinct values, equal gaps) have no peak: the leaf run stops with 2 levels
    assert leaf == {"branch": 0, "stop": "no peaks", "levels": 2}
    assert [len(level.labels) for level in chain.levels] == [60, 20]
    assert np.array_equal(chain.positions()[1], grid)
    # branch 1 does not exist for one latent with 2 peaks (a single interval)
    _, leaf1, _ = leaf_run(base, level0, 1, settings, train_and_label)
    assert leaf1["stop"] == "x_peak beyond the intervals"


# --- the report's table ---------------------------------------------------------------------------------------------


def test_generation_table_from_records():
    rows = [
        ("m0", 0, "fitness", 0.2),
        ("m1", 0, "fitness", 0.6),
        ("m2", 0, "fitness", 0.4),
        ("m0", 0, "exploit", {"source": 1, "factors": {}, "hyperparameters": {}}),
        (None, 0, "generation", {"best": 1, "best_score": 0.6, "stop": None, "wall_s": 3.0}),
    ]
    records = pd.DataFrame([("pbt", *r) for r in rows], columns=["kind", "model_id", "step", "key", "value"])
    (row,) = generation_table(records)
    assert row["best"] == "m1" and row["best_fitness"] == 0.6 and row["median_fitness"] == 0.4
    assert row["exploits"] == "m0<-m1" and row["members"] == 3


# --- the CLI's bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["pbt", "run", "--fitness", "elbo"], "unknown fitness 'elbo'"),
        (["pbt", "run", "--population", "1"], "too small for truncation selection"),
        (["pbt", "run", "--fitness", "mig:1000000"], "asks for 1000000 labelled images"),  # dSprites: 737,280
        (["pbt", "run", "--metrics", "bogus"], "unknown metric 'bogus'"),
        (["pbt", "run", "--option", "mig.nonsense=1"], "nonsense"),
        (["pbt", "report"], "holds no PBT run"),
        (["rpu", "report"], "holds no finished rPU-VAE run"),
        (["reproduce", "estermann2020", "--scale", "huge"], "unknown scale 'huge'"),
        (["reproduce", "estermann2020", "--seeds", "x"], "seeds"),
    ],
)
def test_cli_bad_input_is_one_line_and_stores_nothing(tmp_path, capsys, args, message):
    from untwine.cli import main

    out = tmp_path / "p"
    argv = [*args, str(out)] if args[1] == "report" else [*args, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()
