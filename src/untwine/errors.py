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
