"""Training logs: TensorBoard event files and a JSONL file with one JSON object per logged step."""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


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
    from the JSONL file and TensorBoard is told to purge them, so the curves show each step once.
    """

    def __init__(self, run_path: str | Path, resume_step: int = 0):
        run_path = Path(run_path)
        self.jsonl_path = run_path / "log.jsonl"
        kept = [r for r in read_jsonl(self.jsonl_path) if r.get("step", 0) <= resume_step] if resume_step else []
        self.jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.jsonl_path, "a")
        self._tb = SummaryWriter(str(run_path / "tb"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, values: dict[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        for name, value in values.items():
            self._tb.add_scalar(f"train/{name}", value, step)

    def close(self) -> None:
        self._file.close()
        self._tb.close()
