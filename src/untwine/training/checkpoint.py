"""Atomic checkpoints: safetensors weights + safetensors optimiser tensors + JSON state (DESIGN.md).

Layout under `checkpoints/`:
    step-00001000/ model.safetensors, optimizer.safetensors, state.json   (the last `keep` of them)
    latest                                                                 (name of the newest complete one)
    final/                                                                 (written once, at the end)
A checkpoint directory is written under a temporary name, fsynced, then renamed; `latest` is replaced
atomically afterwards, so a crash at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from untwine.errors import CheckpointError

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
FORMAT_VERSION = 1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file via a temporary file, fsync and rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; results are meant to be read by others
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def encode_rng(generator: torch.Generator) -> str:
    return base64.b64encode(generator.get_state().numpy().tobytes()).decode("ascii")


def decode_rng(generator: torch.Generator, text: str) -> None:
    data = bytearray(base64.b64decode(text))
    generator.set_state(torch.frombuffer(data, dtype=torch.uint8).clone())


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
    step: int,
    extra: dict | None = None,
    modules: dict[str, torch.nn.Module] | None = None,
) -> None:
    """Write one complete checkpoint directory atomically (temporary name, fsync, rename).

    `modules`: further networks trained with the model (FactorVAE's discriminator), saved as `<name>.safetensors`.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, tmp / MODEL_FILE, metadata={"step": str(step)})
        for name, module in (modules or {}).items():
            weights = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            save_file(weights, tmp / f"{name}.safetensors", metadata={"step": str(step)})
        opt_tensors, opt_meta = {}, {}
        for name, optimizer in optimizers.items():
            tensors, meta = _optimizer_tensors(optimizer)
            opt_tensors.update({f"{name}.{k}": v for k, v in tensors.items()})
            opt_meta[name] = meta
        save_file(opt_tensors, tmp / OPTIMIZER_FILE)
        state = {
            "format_version": FORMAT_VERSION,
            "step": step,
            "optimizers": opt_meta,
            "rng": {name: encode_rng(g) for name, g in generators.items()},
            **(extra or {}),
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        for file in tmp.iterdir():
            _fsync_file(file)
        _fsync_dir(tmp)
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(tmp, directory)
        _fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_state(directory: Path) -> dict:
    path = Path(directory) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint state at {path}") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"corrupt checkpoint state {path}: {exc}") from None


def load_weights(model: torch.nn.Module, directory: Path, file: str = MODEL_FILE) -> None:
    """Load `model.safetensors` (or `file`) into `model`, with a clear error on a missing, corrupt or mismatched
    file."""
    path = Path(directory) / file
    if not path.exists():
        raise CheckpointError(f"no weights at {path}")
    try:
        weights = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt weights file {path}: {exc}") from None
    missing = set(model.state_dict()) - set(weights)
    unexpected = set(weights) - set(model.state_dict())
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match the model: {str(exc).splitlines()[-1]}") from None


def load_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
    modules: dict[str, torch.nn.Module] | None = None,
) -> dict:
    """Restore weights, optimiser states and generator states; returns the JSON state (with `step`)."""
    directory = Path(directory)
    state = read_state(directory)
    load_weights(model, directory)
    for name, module in (modules or {}).items():
        load_weights(module, directory, f"{name}.safetensors")
    try:
        tensors = load_file(directory / OPTIMIZER_FILE)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt optimiser file in {directory}: {exc}") from None
    device = next(model.parameters()).device
    for name, optimizer in optimizers.items():
        prefix = f"{name}."
        own = {k[len(prefix) :]: v.to(device) for k, v in tensors.items() if k.startswith(prefix)}
        _restore_optimizer(optimizer, own, state["optimizers"][name])
    for name, generator in generators.items():
        decode_rng(generator, state["rng"][name])
    return state


class CheckpointDir:
    """The `checkpoints/` folder of a run: rolling step checkpoints, a `latest` pointer and `final`."""

    def __init__(self, path: str | Path, keep: int = 2):
        self.path = Path(path)
        self.keep = keep

    @property
    def final(self) -> Path:
        return self.path / "final"

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        pointer = self.path / "latest"
        if not pointer.exists():
            return None
        candidate = self.path / pointer.read_text().strip()
        return candidate if (candidate / STATE_FILE).exists() else None

    def save(self, model, optimizers, generators, step: int, extra: dict | None = None, modules=None) -> Path:
        target = self.path / f"step-{step:08d}"
        save_checkpoint(target, model, optimizers, generators, step, extra, modules)
        atomic_write_text(self.path / "latest", target.name)
        steps = sorted(p for p in self.path.glob("step-*") if p.is_dir())
        for old in steps[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def save_final(self, model, optimizers, generators, step: int, extra: dict | None = None, modules=None) -> Path:
        save_checkpoint(self.final, model, optimizers, generators, step, extra, modules)
        return self.final
