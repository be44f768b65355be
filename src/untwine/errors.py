"""Errors that untwine raises for bad input: each carries one line a user can act on."""


class UntwineError(Exception):
    """Base class: the CLI prints the message as one line and exits with status 2."""


class DataNotFoundError(UntwineError, FileNotFoundError):
    """A data file that was asked for is not where untwine looks for it."""


class InvalidInputError(UntwineError, ValueError):
    """Arrays of the wrong shape, dtype or content (NaN, inf, too few points...)."""


class TrainingDivergedError(UntwineError, RuntimeError):
    """The loss became NaN/inf or exceeded the divergence threshold; the last good checkpoint is kept."""


class CheckpointError(UntwineError, RuntimeError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded into."""


class RunInUseError(UntwineError, RuntimeError):
    """Another process holds the lock of a run directory (training or evaluating it)."""


class StorageError(UntwineError, OSError):
    """A file or directory could not be created, written or read (a file in the way, a read-only mount, a full
    disk...); whatever was stored before is kept."""


class MetricsFailedError(UntwineError, RuntimeError):
    """Some metrics of an evaluation failed; the others' results were saved. `lines` holds one line per failure,
    `results` what was computed."""

    def __init__(self, lines: list[str], results: dict):
        super().__init__("; ".join(lines))
        self.lines = lines
        self.results = results


class UntwineWarning(UserWarning):
    """Something a user should know that does not stop the work (e.g. a damaged checkpoint skipped on resume);
    the CLI prints it as one `warning:` line."""
