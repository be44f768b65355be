"""The `untwine` command line: a thin skin over the library (parse, call, print).

One module per command group: `train` (train, demo), `evaluate` (evaluate, report), `datasets`, `select`, `study`,
`pbt` (pbt, rpu), `reproduce`.
Every error a user can cause (a bad argument, a missing or unwritable file, a diverged run, a run in use) prints
one line `error: ...` on stderr and exits 2 (an evaluation prints one such line per failed metric); warnings print
as one line `warning: ...`; an interrupt (Ctrl-C) prints one line `interrupted: ...` and exits 130.
"""

from __future__ import annotations

import contextlib
import sys
import warnings

import typer

from untwine.cli import datasets, evaluate, pbt, reproduce, select, study, train  # noqa: F401  (each registers commands)
from untwine.cli.app import app
from untwine.errors import UntwineError

INTERRUPTED = "interrupted: everything saved so far is kept (continue a training run with --resume)"


@contextlib.contextmanager
def _one_line_warnings():
    """Print warnings as `warning: <message>` (no source line), each distinct one once."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {str(message).splitlines()[0] if str(message) else category.__name__}", file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning every user error into one line on stderr and exit status 2."""
    try:
        with _one_line_warnings():
            result = app(args=argv, prog_name="untwine", standalone_mode=False)
        if result == 130:  # Typer turns KeyboardInterrupt into Exit(130) and returns its code; commands return None
            print(INTERRUPTED, file=sys.stderr)
        return result if isinstance(result, int) else 0
    except UntwineError as exc:
        for line in getattr(exc, "lines", None) or [str(exc)]:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file system error no command anticipated: still one line
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{':' + where if where else ''}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        if exc.exit_code == 130:  # Typer turns KeyboardInterrupt into Exit(130)
            print(INTERRUPTED, file=sys.stderr)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # Typer/Click usage errors
            if not exc.format_message():  # a group called without a command: its help was printed
                return 0
            ctx = getattr(exc, "ctx", None)
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            print(f"error: {exc.format_message()}{hint}", file=sys.stderr)
            return exc.exit_code or 2
        raise
