"""Training logs: TensorBoard event files and a JSONL file with one JSON object per logged step."""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from untwine.lock import storage_error
from untwine.training.checkpoint import atomic_write_text
from untwine.training.faults import crash_point


def read_jsonl(path: str | Path) -> list[dict]:
    """All records of a JSONL log; a truncated last line (from a killed run) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


class TrainingLog:
    """Writes each logged step to `log.jsonl` and to TensorBoard under `tb/`.

    On resume from step s, records after s (written after the last checkpoint of a killed run) are dropped
    from the JSONL file (rewritten atomically) and TensorBoard is told to purge them, so the curves show each step
    once. The records' averages run over the steps since the previous record even across a resume: the trainer
    checkpoints its partial sums.
    """

    def __init__(self, run_path: str | Path, resume_step: int = 0):
        run_path = Path(run_path)
        self.jsonl_path = run_path / "log.jsonl"
        kept = [r for r in read_jsonl(self.jsonl_path) if r.get("step", 0) <= resume_step] if resume_step else []
        atomic_write_text(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in kept))
        try:
            self._file = open(self.jsonl_path, "a")
        except OSError as exc:
            raise storage_error(exc, "write", self.jsonl_path) from None
        self._tb = SummaryWriter(str(run_path / "tb"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, values: dict[str, float]) -> None:
        try:
            self._file.write(json.dumps({"step": step, **values}) + "\n")
            self._file.flush()
        except OSError as exc:
            raise storage_error(exc, "write", self.jsonl_path) from None
        crash_point("log")
        for name, value in values.items():
            self._tb.add_scalar(f"train/{name}", value, step)

    def close(self) -> None:
        self._file.close()
        self._tb.close()
