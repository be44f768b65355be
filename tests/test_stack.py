"""ModelStack: K members computed as one batch give each member's own outputs, gradients and Adam updates."""

from __future__ import annotations

import copy

import pytest
import torch

from untwine.data.stored import StoredDataset
from untwine.errors import InvalidInputError
from untwine.methods import annealed_vae_loss, beta_tcvae_loss, beta_vae_loss, dip_vae_loss
from untwine.nn import GaussianVAE
from untwine.nn.stack import (
    ModelStack,
    member_optimizer_state,
    stack_batches,
    stack_optimizer_states,
    stacked_terms,
)
from untwine.seeding import make_generator

SHAPE = (1, 64, 64)
MODES = ("loop", "grouped", "vmap")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: these checks are about arithmetic, not speed, and on a shared 2-core machine a second
    OpenMP thread that has no core to run on makes float64 convolutions ~20x slower. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def models_for(seeds, architecture="conv", latent_dim=10, shape=SHAPE):
    return [GaussianVAE(shape, latent_dim, architecture, make_generator(s, "init")) for s in seeds]


def binary_images_dataset() -> StoredDataset:
    """A tiny stored data set (4 x 5 factor grid) of random binary 64 x 64 images."""
    g = torch.Generator().manual_seed(7)
    storage = (torch.rand(20, *SHAPE, generator=g) < 0.3).to(torch.uint8) * 255
    return StoredDataset("tiny", storage, (4, 5), ("a", "b"), SHAPE)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("architecture,channels_last", [("conv", False), ("conv", True), ("fc", False)])
def test_encode_decode_equal_each_members_own(mode, architecture, channels_last):
    models = models_for([0, 1, 2], architecture)
    stack = ModelStack.from_models(models, mode=mode, channels_last=channels_last)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 5, *SHAPE, generator=g)
    z = torch.randn(3, 5, 10, generator=g)
    mean, logvar = stack.encode(x)
    logits = stack.decode(z)
    assert mean.shape == logvar.shape == (3, 5, 10) and logits.shape == (3, 5, *SHAPE)
    for k, model in enumerate(models):
        with torch.no_grad():
            own_mean, own_logvar = model.encode(x[k])
            own_logits = model.decode(z[k])
        torch.testing.assert_close(mean[k], own_mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logvar[k], own_logvar, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logits[k], own_logits, rtol=1e-5, atol=1e-5)
    # non-vacuous: the members really are different networks
    assert not torch.allclose(logits[0], logits[1])


SEEDS, BETAS, STEPS, BATCH = (0, 1, 2), (1.0, 4.0, 16.0), 20, 8


def train_separately(dataset, lr, dtype=torch.float32, channels_last=False):
    """What K separate runs do (the trainer's step): own init, own Adam, own data and noise generators."""
    models, losses = [], []
    for seed, beta in zip(SEEDS, BETAS):
        model = GaussianVAE(SHAPE, 10, "conv", make_generator(seed, "init")).to(dtype)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        data, noise = make_generator(seed, "data"), make_generator(seed, "noise")
        per_step = []
        for _ in range(STEPS):
            _, x = dataset.sample(BATCH, data)
            x = x.to(dtype)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            mean, logvar, z, logits = model(x, noise)
            loss = beta_vae_loss(logits, x, mean, logvar, torch.tensor(beta, dtype=dtype))["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            per_step.append(loss.item())
        models.append(model)
        losses.append(per_step)
    return models, torch.tensor(losses, dtype=torch.float64).T  # [steps, K]


def train_stacked(dataset, lr, mode, dtype=torch.float32, channels_last=False):
    stack = ModelStack.from_models([m.to(dtype) for m in models_for(SEEDS)], mode=mode, channels_last=channels_last)
    optimizer = torch.optim.Adam(stack.parameters(), lr=lr)  # ONE optimiser for all members
    data = [make_generator(s, "data") for s in SEEDS]
    noise = [make_generator(s, "noise") for s in SEEDS]
    beta = torch.tensor(BETAS, dtype=dtype)
    losses = []
    for _ in range(STEPS):
        _, x = stack_batches(dataset, BATCH, data)
        x = x.to(dtype)
        mean, logvar, z, logits = stack(x, noise)
        terms = stacked_terms(beta_vae_loss, logits, x, mean, logvar, z, beta=beta)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].sum().backward()
        optimizer.step()
        losses.append(terms["loss"].detach().double())
    return stack, torch.stack(losses)


def weight_gap(stack_or_models, reference) -> float:
    """Largest absolute difference of any weight between two sets of K members."""
    members = (
        [stack_or_models.member_state_dict(k) for k in range(len(reference))]
        if isinstance(stack_or_models, ModelStack)
        else [m.state_dict() for m in stack_or_models]
    )
    return max(
        (members[k][name].double() - value.double()).abs().max().item()
        for k, model in enumerate(reference)
        for name, value in model.state_dict().items()
    )


@pytest.fixture(scope="module")
def separate_float64():
    return train_separately(binary_images_dataset(), lr=1e-3, dtype=torch.float64)


@pytest.mark.parametrize("mode,channels_last", [("loop", False), ("grouped", True), ("vmap", False)])
def test_training_a_stack_equals_training_each_member_separately(separate_float64, mode, channels_last):
    """float64, so that rounding cannot hide a real difference (a wrong batch, noise draw, gradient scale or Adam
    state would show at ~1e-3): K = 3 members, different seeds and betas, 20 Adam steps at lr 1e-3, batch 8."""
    separate, separate_losses = separate_float64
    stack, stacked_losses = train_stacked(binary_images_dataset(), 1e-3, mode, torch.float64, channels_last)
    torch.testing.assert_close(stacked_losses, separate_losses, rtol=1e-10, atol=0)
    for k, model in enumerate(separate):
        trained = stack.member_state_dict(k)
        for name, value in model.state_dict().items():
            torch.testing.assert_close(trained[name], value, rtol=1e-9, atol=1e-11, msg=f"member {k} {name}")
    # non-vacuous: training moved every member's weights far beyond the tolerance, and it learns
    initial = models_for(SEEDS)
    for k, model in enumerate(separate):
        moved = model.state_dict()["encoder.mean.weight"] - initial[k].state_dict()["encoder.mean.weight"].double()
        assert moved.abs().max() > 1e-2
    assert (stacked_losses[-1] < stacked_losses[0]).all()


def test_float32_training_stays_within_the_rounding_of_a_separate_run():
    """float32 as the trainer runs it (channels_last, default mode, reference lr 1e-4): per-step losses agree to
    1e-4 relative, and the weights are as close to the separate run's as that run is to itself in another memory
    layout (float32 Adam amplifies rounding in gradients that nearly cancel; member 0 here is such a case)."""
    dataset = binary_images_dataset()
    separate, separate_losses = train_separately(dataset, 1e-4, channels_last=True)
    nchw, _ = train_separately(dataset, 1e-4, channels_last=False)
    stack, stacked_losses = train_stacked(dataset, 1e-4, "auto", channels_last=True)
    torch.testing.assert_close(stacked_losses, separate_losses, rtol=1e-4, atol=0)
    assert weight_gap(stack, separate) <= 2 * weight_gap(nchw, separate) + 1e-6


@pytest.mark.parametrize("mode", MODES)
def test_members_are_ordinary_models_and_state_dict_round_trips(mode):
    stack = ModelStack.from_seeds([3, 4], mode=mode)
    with torch.no_grad():  # make the members differ from their initialisation
        for p in stack.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x = torch.rand(2, 4, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mean, logvar = stack.encode(x)
        logits = stack.decode(mean)
    models = stack.to_models()
    assert len(models) == stack.K == 2
    for k, model in enumerate(models):
        assert type(model) is GaussianVAE
        fresh = GaussianVAE(SHAPE, 10, "conv")
        fresh.load_state_dict(model.state_dict())  # what saving a member as its own run amounts to
        with torch.no_grad():
            for m in (model, stack.member(k), fresh):
                own_mean, own_logvar = m.encode(x[k])
                torch.testing.assert_close(own_mean, mean[k], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(own_logvar, logvar[k], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(m.decode(mean[k]), logits[k], rtol=1e-5, atol=1e-5)
    # members are copies: changing one does not change the stack
    with torch.no_grad():
        models[0].encoder.mean.weight.zero_()
    assert stack.state_dict()["encoder.mean.weight"][0].abs().sum() > 0
    # state_dict: a GaussianVAE's keys, stacked to [K, ...]; loads into a stack built from other seeds
    state = stack.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        k: (2, *v.shape) for k, v in GaussianVAE(SHAPE, 10).state_dict().items()
    }
    other = ModelStack.from_seeds([8, 9], mode=mode)
    other.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(other.encode(x)[0], mean, rtol=0, atol=0)
    # set_member writes one member back
    other.set_member(1, models[0])
    torch.testing.assert_close(other.member_state_dict(1)["encoder.mean.weight"], torch.zeros(10, 256))


def test_a_stack_of_one_is_the_ordinary_model():
    model = models_for([5])[0]
    stack = ModelStack.from_models([model], channels_last=True)
    assert stack.K == 1 and stack.resolved_mode == "loop"  # "auto" on the CPU
    x = torch.rand(1, 6, *SHAPE, generator=torch.Generator().manual_seed(2))
    g1, g2 = make_generator(5, "noise"), make_generator(5, "noise")
    mean, logvar, z, logits = stack(x, [g1])
    own = model(x[0], g2)
    for a, b in zip((mean, logvar, z, logits), own):
        torch.testing.assert_close(a[0], b, rtol=1e-5, atol=1e-5)
    terms = stacked_terms(beta_vae_loss, logits, x, mean, logvar, z, beta=torch.tensor([4.0]))
    assert terms["loss"].shape == (1,)
    torch.testing.assert_close(terms["loss"][0], beta_vae_loss(own[3], x[0], own[0], own[1], 4.0)["loss"])


@pytest.mark.parametrize(
    "models,message",
    [
        (lambda: models_for([0]) + models_for([1], latent_dim=6), "latent_dim=6"),
        (lambda: models_for([0]) + models_for([1], architecture="fc"), "architecture='fc'"),
        (lambda: models_for([0]) + models_for([1], shape=(3, 64, 64)), r"\(3, 64, 64\)"),
        (lambda: [], "at least one"),
        (lambda: [torch.nn.Linear(2, 2)], "GaussianVAE"),
    ],
)
def test_mismatched_members_are_refused(models, message):
    with pytest.raises(InvalidInputError, match=message):
        ModelStack.from_models(models())


def test_bad_inputs_are_refused():
    stack = ModelStack.from_models(models_for([0, 1]))
    with pytest.raises(InvalidInputError, match="K=2"):
        stack.encode(torch.zeros(3, 4, *SHAPE))
    with pytest.raises(InvalidInputError, match="K=2"):
        stack.decode(torch.zeros(2, 4, 7))
    with pytest.raises(InvalidInputError, match="mode"):
        ModelStack.from_models(models_for([0]), mode="sideways")
    with pytest.raises(InvalidInputError, match="out of range"):
        stack.member(2)
    x = torch.rand(2, 3, *SHAPE)
    with pytest.raises(InvalidInputError, match="3 values for K=2"):
        stacked_terms(beta_vae_loss, x, x, torch.zeros(2, 3, 10), torch.zeros(2, 3, 10), beta=torch.ones(3))


def test_stacked_terms_equal_each_members_terms_for_every_vmappable_objective():
    g = torch.Generator().manual_seed(3)
    K, B, d = 3, 16, 10
    logits = torch.randn(K, B, *SHAPE, generator=g)
    x = (torch.rand(K, B, *SHAPE, generator=g) < 0.5).float()
    mean, logvar = torch.randn(K, B, d, generator=g), 0.5 * torch.randn(K, B, d, generator=g)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(K, B, d, generator=g)
    cases = [
        (beta_vae_loss, {"beta": torch.tensor([1.0, 4.0, 16.0])}, {}),
        (beta_tcvae_loss, {"beta": torch.tensor([1.0, 4.0, 10.0])}, {}),
        (beta_tcvae_loss, {"beta": torch.tensor([2.0, 4.0, 10.0])}, {"dataset_size": 737280, "sampling": "mss"}),
        (
            dip_vae_loss,
            {"lambda_od": torch.tensor([1.0, 5.0, 20.0]), "lambda_d_factor": torch.tensor([10.0, 1.0, 2.0])},
            {"dip_type": "ii"},
        ),
        (
            annealed_vae_loss,
            {"gamma": torch.tensor([100.0, 1000.0, 10.0]), "c_max": torch.tensor([5.0, 10.0, 25.0])},
            {"iteration_threshold": 1000.0, "step": torch.tensor(300.0)},
        ),
    ]
    for loss_fn, per_member, shared in cases:
        terms = stacked_terms(loss_fn, logits, x, mean, logvar, z, **per_member, **shared)
        for k in range(K):
            args = (logits[k], x[k], mean[k], logvar[k]) + ((z[k],) if loss_fn is beta_tcvae_loss else ())
            own = loss_fn(*args, **{n: v[k] for n, v in per_member.items()}, **shared)
            assert set(terms) == set(own)
            for name, value in own.items():
                assert terms[name].shape == (K,)
                msg = f"{loss_fn.__name__} {name}"
                torch.testing.assert_close(terms[name][k], value, rtol=1e-5, atol=1e-4, msg=msg)


def test_a_member_with_its_optimizer_state_continues_as_an_ordinary_run():
    """Save member k (weights + its slice of the stack's Adam state) as a run, resume it alone: it takes the same
    steps as the stack continues to take; and K single-run states stack back into the stack's optimiser state."""
    dataset = binary_images_dataset()
    stack = ModelStack.from_models(models_for([0, 1]))
    optimizer = torch.optim.Adam(stack.parameters(), lr=1e-3)
    data = [make_generator(s, "data") for s in (0, 1)]
    noise = [make_generator(s, "noise") for s in (0, 1)]
    beta = torch.tensor([1.0, 8.0])

    def stack_step():
        _, x = stack_batches(dataset, 4, data)
        mean, logvar, z, logits = stack(x, noise)
        loss = stacked_terms(beta_vae_loss, logits, x, mean, logvar, z, beta=beta)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        return loss.detach()

    for _ in range(3):
        stack_step()
    k = 1
    model = stack.member(k)
    single = torch.optim.Adam(model.parameters(), lr=1e-3)
    single.load_state_dict(member_optimizer_state(optimizer.state_dict(), k))
    single_data, single_noise = copy.deepcopy(data[k]), copy.deepcopy(noise[k])
    restacked = stack_optimizer_states([member_optimizer_state(optimizer.state_dict(), j) for j in range(2)])
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(restacked["state"][index][key], value, rtol=0, atol=0)
    for _ in range(2):
        stacked_loss = stack_step()
        _, x = dataset.sample(4, single_data)
        mean, logvar, z, logits = model(x, single_noise)
        loss = beta_vae_loss(logits, x, mean, logvar, beta[k])["loss"]
        single.zero_grad(set_to_none=True)
        loss.backward()
        single.step()
        torch.testing.assert_close(loss.detach(), stacked_loss[k], rtol=1e-5, atol=0)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(stack.member_state_dict(k)[name], value, rtol=1e-5, atol=1e-6)
