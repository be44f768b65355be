"""The Typer application and the consoles every command group shares."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    help="untwine: learn, evaluate and select disentangled representations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)
