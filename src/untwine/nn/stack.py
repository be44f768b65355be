"""ModelStack: K independent GaussianVAEs (seeds / hyperparameters) trained in one process as one batched computation.

Every parameter of the K members is held once, stacked along a leading member axis: the stack's
``state_dict()`` has exactly the keys of a `GaussianVAE`'s, each with shape ``[K, *shape]``. Because the members
share no parameter and the training loss is the **sum** of the members' losses, the gradient of that sum with
respect to member k's slice is member k's own gradient, and one `torch.optim.Adam` over the stacked parameters
(Adam is elementwise; its step counter is the same for all members since they step together) updates every member
exactly as its own Adam would. ``tests/test_stack.py`` checks this against K separately trained models.

Three ways of computing the batched forward pass (``mode``), all giving each member's own outputs:

- ``"grouped"``: convolutions run once for all members as grouped convolutions (members stacked along channels,
  ``groups=K``), dense layers as one batched matmul ``[K, B, in] @ [K, in, out]``. Activations stay in the grouped
  ``[B, K*C, H, W]`` layout through the conv stack (channels_last when ``channels_last=True``). One kernel launch
  per layer for all K members: the choice for GPUs.
- ``"vmap"``: ``torch.func.vmap`` of ``torch.func.functional_call`` of the ordinary module over the stacked
  parameters. PyTorch's batching rule also turns the convolutions into grouped ones; on CPU it measured slower
  than "grouped" (extra layout copies), so it is kept as the simple reference implementation.
- ``"loop"``: the members one after another in one autograd graph (``functional_call`` on slices of the stacked
  parameters). On a CPU one model at batch 64 already fills the cores, and grouping K models only grows the working
  set; "loop" keeps single-model speed while keeping the stack's one optimiser / one checkpoint.
- ``"auto"`` (default): "loop" when the parameters are on the CPU, "grouped" otherwise.

Measured on the 2-core development CPU (loaded by another job, 1 thread, channels_last; benchmarks/stack_throughput.py),
model-steps/s relative to K separate models stepped in turn, at K = 1 / 5 / 10: loop 0.92 / 0.99 / 0.97,
grouped 0.96 / 0.73 / 0.61, vmap 0.84 / 0.46 / 0.50. GPUs are not measured yet.

K = 1 is the ordinary case (in every mode it is the ordinary model's computation, up to float rounding).

Not stackable (`stackable`): the rPU-VAE network "rpu_conv", whose BatchNorm running statistics are buffers, not
parameters; the stack refuses it with a clear error. (Stacking it is possible -- per-member running statistics as
stacked buffers; in the grouped layout BatchNorm over K*C channels is per member -- but not built.)

    >>> stack = ModelStack.from_seeds([0, 1, 2], channels_last=True)  # three conv64 members, seeds 0..2
    >>> mean, logvar, z, logits = stack(x, noise_generators)    # x: [3, B, 1, 64, 64]
    >>> terms = stacked_terms(beta_vae_loss, logits, x, mean, logvar, z, beta=torch.tensor([1., 4., 16.]))
    >>> terms["loss"].sum().backward()                          # the sum: each member gets its own gradient
    >>> models = stack.to_models()                              # ordinary GaussianVAEs, to save / evaluate
"""

from __future__ import annotations

import copy
import inspect
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from untwine.errors import InvalidInputError
from untwine.nn.conv import GaussianVAE
from untwine.seeding import make_generator

MODES = ("auto", "loop", "grouped", "vmap")


def stackable(architecture: str) -> bool:
    """Whether ModelStack can hold models of `architecture`: not rpu_conv, whose BatchNorm running statistics are
    buffers (the stack holds parameters only, and its "grouped" program has no BatchNorm layer)."""
    return architecture != "rpu_conv"


def _signature(model: GaussianVAE) -> tuple:
    return (tuple(model.observation_shape), int(model.latent_dim), model.architecture)


def _describe(sig: tuple) -> str:
    shape, latent_dim, architecture = sig
    return f"architecture={architecture!r}, observation_shape={shape}, latent_dim={latent_dim}"


class ModelStack(nn.Module):
    """K GaussianVAEs of one architecture held as stacked ``[K, ...]`` parameters; see the module docstring.

    ``channels_last=True`` does what ``model.to(memory_format=torch.channels_last)`` plus channels_last inputs do
    for one model (the trainer's default for conv; faster on CPU with oneDNN): the conv inputs and weights are laid
    out channels_last inside the forward pass. It changes memory layouts only, never results beyond float rounding.
    Do not call ``stack.to(memory_format=...)`` (the stacked conv weights are 5-d and PyTorch refuses);
    ``.to(device)`` and ``.to(dtype)`` work. Inputs may be in any layout.
    """

    def __init__(self, models: Sequence[GaussianVAE], mode: str = "auto", channels_last: bool = False):
        super().__init__()
        models = list(models)
        if not models:
            raise InvalidInputError("a ModelStack needs at least one model (K >= 1)")
        for i, m in enumerate(models):
            if not isinstance(m, GaussianVAE):
                raise InvalidInputError(
                    f"ModelStack members must be GaussianVAE modules; member {i} is {type(m).__name__}"
                )
        if mode not in MODES:
            raise InvalidInputError(f"unknown ModelStack mode {mode!r}; choose one of {', '.join(MODES)}")
        if not stackable(models[0].architecture):
            raise InvalidInputError(
                f"ModelStack cannot stack the {models[0].architecture!r} architecture: its BatchNorm layers keep "
                "running statistics (buffers), which a stack of parameters does not hold; train such models one at a "
                "time (stack size 1)"
            )
        reference = _signature(models[0])
        for i, m in enumerate(models[1:], start=1):
            if _signature(m) != reference:
                raise InvalidInputError(
                    f"ModelStack members must share architecture, observation shape and latent size: member 0 has "
                    f"{_describe(reference)} but member {i} has {_describe(_signature(m))}"
                )
        first = dict(models[0].named_parameters())
        for i, m in enumerate(models[1:], start=1):
            params = dict(m.named_parameters())
            for name, p in first.items():
                if params[name].device != p.device or params[name].dtype != p.dtype:
                    raise InvalidInputError(
                        f"ModelStack members must be on one device with one dtype: member 0's {name} is "
                        f"{p.dtype} on {p.device}, member {i}'s is {params[name].dtype} on {params[name].device}"
                    )
        self.observation_shape, self.latent_dim, self.architecture = reference
        self.mode = mode
        self.channels_last = bool(channels_last)
        self._K = len(models)
        # Parameters live in a tree of plain containers mirroring GaussianVAE, so that state_dict keys are the
        # GaussianVAE's ("encoder.features.0.weight"), each stacked to [K, ...].
        self._names = list(first)
        with torch.no_grad():
            for name in self._names:
                stacked = torch.stack([dict(m.named_parameters())[name].detach() for m in models]).contiguous()
                self._owner(name, create=True).register_parameter(name.rsplit(".", 1)[-1], nn.Parameter(stacked))
        # A weightless copy of the architecture (meta device): the layer program for "grouped" and the module
        # that `functional_call` runs for "vmap" and "loop". Kept out of the module tree: it holds no parameters.
        template = copy.deepcopy(models[0]).to("meta")
        object.__setattr__(self, "_template", template)

    # construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_models(
        cls, models: Sequence[GaussianVAE], mode: str = "auto", channels_last: bool = False
    ) -> "ModelStack":
        """A stack holding copies of `models`' current weights (the models themselves are not modified)."""
        return cls(models, mode=mode, channels_last=channels_last)

    @classmethod
    def from_seeds(
        cls,
        seeds: Sequence[int],
        observation_shape: tuple[int, int, int] = (1, 64, 64),
        latent_dim: int = 10,
        architecture: str = "conv",
        device: str | torch.device = "cpu",
        mode: str = "auto",
        channels_last: bool = False,
    ) -> "ModelStack":
        """Members initialised exactly as `RunDir.build_model` initialises a run of each seed (``init`` stream)."""
        models = [
            GaussianVAE(observation_shape, latent_dim, architecture, make_generator(seed, "init")) for seed in seeds
        ]
        return cls(models, mode=mode, channels_last=channels_last).to(device)

    def _owner(self, name: str, create: bool = False) -> nn.Module:
        module: nn.Module = self
        for part in name.split(".")[:-1]:
            child = module._modules.get(part)
            if child is None:
                if not create:
                    raise KeyError(name)
                child = nn.Module()
                module.add_module(part, child)
            module = child
        return module

    def _param(self, name: str) -> torch.Tensor:
        return self._owner(name)._parameters[name.rsplit(".", 1)[-1]]

    @property
    def K(self) -> int:
        return self._K

    @property
    def resolved_mode(self) -> str:
        """The implementation in use: `mode`, with "auto" resolved by the parameters' device."""
        if self.mode != "auto":
            return self.mode
        return "loop" if self._param(self._names[0]).device.type == "cpu" else "grouped"

    def __len__(self) -> int:
        return self._K

    def extra_repr(self) -> str:
        return (
            f"K={self.K}, mode={self.mode!r} ({self.resolved_mode}), channels_last={self.channels_last}, "
            f"{_describe(_signature(self))}"
        )

    # members as ordinary modules -----------------------------------------------------------------------------

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights as a GaussianVAE state_dict (detached copies)."""
        k = self._index(k)
        return {name: self._param(name).detach()[k].clone() for name in self._names}

    def member(self, k: int) -> GaussianVAE:
        """An ordinary GaussianVAE with member k's current weights (a copy), on the stack's device."""
        state = self.member_state_dict(k)
        # a throwaway generator: building the module must not consume torch's global random stream
        model = GaussianVAE(self.observation_shape, self.latent_dim, self.architecture, torch.Generator())
        model.load_state_dict(state)
        return model.to(next(iter(state.values())).device)

    def to_models(self) -> list[GaussianVAE]:
        return [self.member(k) for k in range(self.K)]

    @torch.no_grad()
    def set_member(self, k: int, source: GaussianVAE | dict[str, torch.Tensor]) -> None:
        """Overwrite member k's weights (e.g. PBT's exploit step). The optimiser's state for that slice is untouched."""
        k = self._index(k)
        state = source.state_dict() if isinstance(source, nn.Module) else source
        if isinstance(source, GaussianVAE) and _signature(source) != _signature(self):
            raise InvalidInputError(
                f"cannot load a model with {_describe(_signature(source))} "
                f"into a stack of {_describe(_signature(self))}"
            )
        missing = set(self._names) - set(state)
        if missing:
            raise InvalidInputError(f"member state lacks {sorted(missing)}")
        for name in self._names:
            self._param(name)[k].copy_(state[name])

    def _index(self, k: int) -> int:
        if not -self.K <= k < self.K:
            raise InvalidInputError(f"member index {k} is out of range for a stack of K={self.K}")
        return k % self.K

    # batched computation ------------------------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor, what: str, trailing: tuple) -> None:
        if x.ndim != 2 + len(trailing) or x.shape[0] != self.K or tuple(x.shape[2:]) != trailing:
            raise InvalidInputError(
                f"{what} must have shape [K={self.K}, B, {', '.join(map(str, trailing))}], got {tuple(x.shape)}"
            )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [K, B, C, H, W] (member k's batch is x[k]) -> (mean, logvar), each [K, B, d]."""
        self._check_input(x, "encode's input", tuple(self.observation_shape))
        if self.resolved_mode != "grouped":
            return self._member_call("encoder", x)
        h = self._grouped_sequential("encoder.features", self._template.encoder.features, x)
        return self._linear("encoder.mean", h), self._linear("encoder.logvar", h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [K, B, d] -> Bernoulli logits [K, B, C, H, W]."""
        self._check_input(z, "decode's input", (self.latent_dim,))
        if self.resolved_mode != "grouped":
            return self._member_call("decoder", z)
        decoder = self._template.decoder
        if self.architecture == "conv":
            h = self._grouped_sequential("decoder.dense", decoder.dense, z)  # [K, B, 1024]
            h = h.unflatten(2, (64, 4, 4))  # DeconvDecoder's view(-1, 64, 4, 4)
            return self._grouped_sequential("decoder.deconv", decoder.deconv, h)
        return self._grouped_sequential("decoder.net", decoder.net, z).unflatten(2, tuple(self.observation_shape))

    def reparameterize(
        self, mean: torch.Tensor, logvar: torch.Tensor, generators: Sequence[torch.Generator] | None = None
    ) -> torch.Tensor:
        """z = mean + exp(logvar / 2) * eps with member k's eps [B, d] drawn from generators[k], exactly the draw
        `GaussianVAE.reparameterize` makes in a separate run with that generator."""
        if generators is None:
            eps = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype)
        else:
            if len(generators) != self.K:
                raise InvalidInputError(f"need one noise generator per member (K={self.K}), got {len(generators)}")
            eps = torch.stack(
                [torch.randn(mean.shape[1:], generator=g, device=mean.device, dtype=mean.dtype) for g in generators]
            )
        return mean + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, generators: Sequence[torch.Generator] | None = None):
        """(mean, logvar, z, logits), each with a leading member axis, as `GaussianVAE.forward` per member."""
        mean, logvar = self.encode(x)
        z = self.reparameterize(mean, logvar, generators)
        return mean, logvar, z, self.decode(z)

    # "vmap" and "loop": functional_call of the ordinary module on the stacked parameters, vmapped or looped

    def _member_call(self, part: str, inputs: torch.Tensor):
        prefix = part + "."
        params = {name[len(prefix) :]: self._param(name) for name in self._names if name.startswith(prefix)}
        module = getattr(self._template, part)
        if self.channels_last and part == "encoder" and self.architecture == "conv":
            # member slices channels_last: memory [K, B, H, W, C]
            inputs = inputs.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
        if self.resolved_mode == "vmap":
            return vmap(lambda p, a: functional_call(module, p, (a,)))(params, inputs)
        # "loop": one member after another in one autograd graph; unbind's backward stacks the members' gradients
        slices = {name: p.unbind(0) for name, p in params.items()}
        if self.channels_last:  # as the separate model's weights (`model.to(memory_format=channels_last)`)
            slices = {
                name: tuple(w.to(memory_format=torch.channels_last) for w in s) if s[0].ndim == 4 else s
                for name, s in slices.items()
            }
        outputs = [
            functional_call(module, {name: s[k] for name, s in slices.items()}, (inputs[k],)) for k in range(self.K)
        ]
        if isinstance(outputs[0], tuple):
            return tuple(torch.stack(parts) for parts in zip(*outputs))
        return torch.stack(outputs)

    # "grouped": members along channels (conv, groups=K) or along a batch axis of matmuls (dense)

    def _to_grouped(self, x: torch.Tensor) -> torch.Tensor:
        """[K, B, C, H, W] -> [B, K*C, H, W] (one copy; channels_last if asked)."""
        K, B, C, H, W = x.shape
        if self.channels_last:
            return x.permute(1, 3, 4, 0, 2).reshape(B, H, W, K * C).permute(0, 3, 1, 2)
        return x.transpose(0, 1).reshape(B, K * C, H, W)

    def _from_grouped(self, h: torch.Tensor) -> torch.Tensor:
        """[B, K*C, H, W] -> [K, B, C, H, W] (a view)."""
        return h.unflatten(1, (self.K, h.shape[1] // self.K)).transpose(0, 1)

    def _linear(self, name: str, h: torch.Tensor) -> torch.Tensor:
        weight, bias = self._param(name + ".weight"), self._param(name + ".bias")
        return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))

    def _grouped_sequential(self, prefix: str, sequential: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
        """Run `sequential`'s layers for all members. h is [K, B, F] (dense), [K, B, C, H, W] (spatial, member-major)
        or [B, K*C, H, W] (grouped); the result is returned member-major ([K, B, ...])."""
        grouped = False
        K = self.K
        for index, layer in sequential.named_children():
            name = f"{prefix}.{index}"
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                if layer.groups != 1 or layer.padding_mode != "zeros":
                    raise NotImplementedError(f"{name}: only ungrouped, zero-padded convolutions can be stacked")
                if not grouped:
                    h, grouped = self._to_grouped(h), True
                weight, bias = self._param(name + ".weight"), self._param(name + ".bias")
                w = weight.flatten(0, 1)  # [K*out, in, kh, kw] (conv) or [K*in, out, kh, kw] (transposed)
                if self.channels_last:
                    w = w.to(memory_format=torch.channels_last)
                b = bias.flatten() if bias is not None else None
                if isinstance(layer, nn.Conv2d):
                    h = F.conv2d(h, w, b, layer.stride, layer.padding, layer.dilation, groups=K)
                else:
                    h = F.conv_transpose2d(
                        h, w, b, layer.stride, layer.padding, layer.output_padding, K, layer.dilation
                    )
            elif isinstance(layer, nn.Flatten):
                if grouped:
                    h, grouped = self._from_grouped(h), False
                h = h.flatten(2)  # per member C, H, W order, as nn.Flatten of NCHW
            elif isinstance(layer, nn.Linear):
                if grouped:
                    raise NotImplementedError(f"{name}: Linear on spatial activations without Flatten")
                h = self._linear(name, h)
            elif isinstance(layer, nn.ReLU):
                h = torch.relu(h)
            elif isinstance(layer, nn.Tanh):
                h = torch.tanh(h)
            else:
                raise NotImplementedError(f"{name}: {type(layer).__name__} cannot be stacked")
        return self._from_grouped(h) if grouped else h


def stack_batches(dataset, batch_size: int, generators: Sequence[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """(factors [K, B, F], observations [K, B, C, H, W]): member k's batch is `dataset.sample(batch_size,
    generators[k])`, the very draw a separate run with that ``data`` generator makes."""
    draws = [dataset.sample(batch_size, g) for g in generators]
    return torch.stack([f for f, _ in draws]), torch.stack([x for _, x in draws])


def member_optimizer_state(state_dict: dict, k: int) -> dict:
    """Member k's share of the state_dict of an optimiser over ``stack.parameters()``: a state_dict that loads into
    the same optimiser class over ``stack.member(k).parameters()`` (same parameter order), so a member can be saved,
    and resumed, as an ordinary run. Per-parameter tensors with a leading member axis are sliced; the rest (Adam's
    ``step``, the hyperparameter groups) are copied."""
    return {
        "state": {
            index: {
                key: value[k].clone() if torch.is_tensor(value) and value.ndim >= 1 else copy.deepcopy(value)
                for key, value in state.items()
            }
            for index, state in state_dict["state"].items()
        },
        "param_groups": copy.deepcopy(state_dict["param_groups"]),
    }


def stack_optimizer_states(state_dicts: Sequence[dict]) -> dict:
    """The inverse of `member_optimizer_state`: K single-model optimiser state_dicts -> one for the stack.
    The members must have stepped equally often and share hyperparameters (one optimiser steps them all)."""
    first = state_dicts[0]
    for i, other in enumerate(state_dicts[1:], start=1):
        if other["param_groups"] != first["param_groups"]:
            raise InvalidInputError(
                f"optimiser state {i} has other hyperparameters than state 0; one optimiser cannot hold both"
            )
    stacked = {}
    for index, state in first["state"].items():
        stacked[index] = {}
        for key, value in state.items():
            values = [sd["state"][index][key] for sd in state_dicts]
            if torch.is_tensor(value) and value.ndim >= 1:
                stacked[index][key] = torch.stack(values)
            else:
                if any(not torch.equal(torch.as_tensor(v), torch.as_tensor(value)) for v in values):
                    raise InvalidInputError(
                        f"optimiser states differ in {key!r} (e.g. Adam's step count); cannot stack them"
                    )
                stacked[index][key] = copy.deepcopy(value)
    return {"state": stacked, "param_groups": copy.deepcopy(first["param_groups"])}


def _takes_z(loss_fn: Callable) -> bool:
    try:
        parameters = inspect.signature(loss_fn).parameters
    except (TypeError, ValueError):
        return True
    return "z" in parameters


def stacked_terms(
    loss_fn: Callable[..., dict[str, torch.Tensor]],
    logits: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    z: torch.Tensor | None = None,
    **hyper,
) -> dict[str, torch.Tensor]:
    """`loss_fn` applied to each member (vmapped over the leading K axis): a dict of [K] tensors.

    ``loss_fn(logits, x, mean, logvar[, z], **hyper)`` is one of the objectives of `untwine.methods`; z is passed
    only when its signature has a ``z`` parameter. A hyperparameter given as a tensor with a leading axis of
    length K is per member (member k gets ``hyper[name][k]``, a 0-d tensor); anything else (a float, a string, a
    0-d tensor such as the step) is shared by all members. Backpropagate ``terms["loss"].sum()``: the sum gives
    every member exactly its own gradient (a mean would scale each by 1/K).
    """
    K = logits.shape[0]
    for name, t in (("x", x), ("mean", mean), ("logvar", logvar), ("z", z)):
        if t is not None and t.shape[0] != K:
            raise InvalidInputError(f"stacked_terms: {name} has {t.shape[0]} members, logits has {K}")
    mapped, fixed = {}, {}
    for name, value in hyper.items():
        if torch.is_tensor(value) and value.ndim >= 1:
            if value.shape[0] != K:
                raise InvalidInputError(
                    f"stacked_terms: hyperparameter {name!r} has {value.shape[0]} values for K={K} members"
                )
            mapped[name] = value
        else:
            fixed[name] = value
    args = [logits, x, mean, logvar]
    if _takes_z(loss_fn):
        if z is None:
            raise InvalidInputError(f"{getattr(loss_fn, '__name__', 'loss_fn')} needs z")
        args.append(z)

    def one(per_member, *a):
        return loss_fn(*a, **per_member, **fixed)

    return vmap(one)(mapped, *args)
