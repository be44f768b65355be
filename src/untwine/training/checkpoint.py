"""Atomic checkpoints: safetensors weights + safetensors optimiser tensors + JSON state (DESIGN.md).

Layout under `checkpoints/`:
    step-00001000/ model.safetensors, optimizer.safetensors, state.json   (the last `keep` of them)
    latest                                                                 (name of the newest complete one)
    final/                                                                 (written at the end of training)
A checkpoint directory is written under a temporary name (`.step-00001000.XXXX`), fsynced, then renamed; `latest`
is replaced atomically afterwards, so a crash at any moment leaves the previous checkpoint usable. An existing
checkpoint of the same name (final/ of a run being extended) is first moved aside (`.final.XXXX.old`), and removed
once the new one is in place; `CheckpointDir.recover` (run under the run directory's lock before anything reads or
writes checkpoints) moves it back if a crash came in between, and removes the temporary entries of killed writes.
Resuming does not trust `latest`: `CheckpointDir.candidates` lists every checkpoint, newest first, and the trainer
resumes from the newest one that loads.
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

from untwine.errors import CheckpointError, StorageError
from untwine.lock import storage_error
from untwine.training.faults import crash_point

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
    """Write a text file via a temporary file, fsync and rename; a StorageError (the old file kept) if it fails."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; results are meant to be read by others
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise storage_error(exc, "write", path) from None


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
    """Write one complete checkpoint directory atomically (temporary name, fsync, rename; an existing one is
    replaced as the module docstring says). A StorageError if it cannot be written; nothing stored is lost then.

    `modules`: further networks trained with the model (FactorVAE's discriminator), saved as `<name>.safetensors`.
    """
    directory = Path(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    except OSError as exc:
        raise storage_error(exc, "write a checkpoint in", directory.parent) from None
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, tmp / MODEL_FILE, metadata={"step": str(step)})
        crash_point("checkpoint.partial")
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
        crash_point("checkpoint.complete")
        if directory.exists():
            old = tmp.with_name(tmp.name + ".old")
            os.rename(directory, old)
            crash_point("checkpoint.swap")
            os.rename(tmp, directory)
            _fsync_dir(directory.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, directory)
            _fsync_dir(directory.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        old = tmp.with_name(tmp.name + ".old")
        if old.exists() and not directory.exists():
            os.rename(old, directory)  # the replacement failed: put the checkpoint back
        if isinstance(exc, OSError):
            raise storage_error(exc, "write checkpoint", directory) from None
        if isinstance(exc, SafetensorError):  # safetensors reports its I/O errors (a full disk...) this way
            raise StorageError(f"cannot write checkpoint {directory}: {exc}") from None
        raise


def read_state(directory: Path) -> dict:
    """The checkpoint's state.json, checked for what resuming needs (a CheckpointError naming what is wrong)."""
    path = Path(directory) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint state at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"corrupt checkpoint state {path}: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"corrupt checkpoint state {path}: not a JSON object")
    missing = [key for key in ("step", "optimizers", "rng") if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint state {path} lacks {', '.join(map(repr, missing))}")
    if not isinstance(state["step"], int) or state["step"] < 0:
        raise CheckpointError(f"checkpoint state {path}: step {state['step']!r} is not a step count")
    return state


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
    for what, names in (("optimizers", optimizers), ("rng", generators)):
        absent = [name for name in names if not isinstance(state[what], dict) or name not in state[what]]
        if absent:
            raise CheckpointError(f"checkpoint state {directory / STATE_FILE} has no {what} entry for {absent}")
    try:
        for name, optimizer in optimizers.items():
            prefix = f"{name}."
            own = {k[len(prefix) :]: v.to(device) for k, v in tensors.items() if k.startswith(prefix)}
            _restore_optimizer(optimizer, own, state["optimizers"][name])
        for name, generator in generators.items():
            decode_rng(generator, state["rng"][name])
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {directory} does not match the run ({type(exc).__name__}: {exc})") from None
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
        """The step checkpoint `latest` names, else (a missing, empty or garbled pointer) the newest step
        checkpoint with a state file, or None."""
        pointer = self.path / "latest"
        try:
            candidate = self.path / pointer.read_text().strip()
            if candidate.name.startswith("step-") and (candidate / STATE_FILE).exists():
                return candidate
        except (OSError, UnicodeDecodeError):
            pass
        steps = [p for p in self._steps() if (p / STATE_FILE).exists()]
        return steps[-1] if steps else None

    def _steps(self) -> list[Path]:
        """The step-* checkpoint directories, oldest first."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.glob("step-*") if p.is_dir() and p.name[5:].isdigit())

    def candidates(self) -> list[tuple[int | None, Path]]:
        """Every checkpoint, newest first, as (step, path): the step checkpoints by the step in their name, final by
        the step in its state (None when unreadable: it is tried first, and its load says what is wrong)."""
        found: list[tuple[int | None, Path]] = [(int(p.name[5:]), p) for p in self._steps()]
        if self.final.is_dir():
            try:
                found.append((int(read_state(self.final)["step"]), self.final))
            except CheckpointError:
                found.append((None, self.final))
        # newest first; final before a step checkpoint of the same step
        return sorted(found, key=lambda c: (c[0] is not None, -(c[0] or 0), c[1].name != "final"))

    def recover(self) -> list[str]:
        """Undo what a killed checkpoint write left: move a checkpoint that was moved aside back when its
        replacement never landed, and remove temporary entries (`.step-*`, `.final.*`, `.latest.*.tmp`).
        Call it only while holding the run directory's lock. Returns what was done, one line each."""
        done = []
        if not self.path.is_dir():
            return done
        for old in sorted(self.path.glob(".*.old")):
            name = old.name[1:].split(".", 1)[0]
            if not (self.path / name).exists():
                os.rename(old, self.path / name)
                done.append(f"restored {name} (its replacement was interrupted)")
        for tmp in sorted(self.path.glob(".*")):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            done.append(f"removed {tmp.name} (left by an interrupted write)")
        return done

    def save(self, model, optimizers, generators, step: int, extra: dict | None = None, modules=None) -> Path:
        target = self.path / f"step-{step:08d}"
        save_checkpoint(target, model, optimizers, generators, step, extra, modules)
        crash_point("checkpoint.latest")
        atomic_write_text(self.path / "latest", target.name)
        crash_point("checkpoint.prune")
        for old in self._steps()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def save_final(self, model, optimizers, generators, step: int, extra: dict | None = None, modules=None) -> Path:
        save_checkpoint(self.final, model, optimizers, generators, step, extra, modules)
        return self.final
