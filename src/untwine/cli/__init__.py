"""The `untwine` command line: a thin skin over the library (parse, call, print).

One module per command group: `train` (train, demo), `evaluate` (evaluate, report), `datasets`, `study`.
Every error a user can cause (a bad argument, a missing file, a diverged run) prints one line and exits 2.
"""

from __future__ import annotations

import sys

import typer

from untwine.cli import datasets, evaluate, study, train  # noqa: F401  (each registers its commands on `app`)
from untwine.cli.app import app
from untwine.errors import UntwineError


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning every user error into one line on stderr and exit status 2."""
    try:
        result = app(args=argv, prog_name="untwine", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except UntwineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted: the last checkpoint is kept; continue with --resume", file=sys.stderr)
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
