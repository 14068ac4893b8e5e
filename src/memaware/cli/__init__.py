"""The `memaware` command line: a thin typer app over the library.

Each area registers its commands from its own module (COMMAND_MODULES). Errors of the user's input
(MemawareError) print as one line and exit with code 2, without a traceback.
"""
from __future__ import annotations

import functools
import importlib

import typer
from rich.console import Console

from ..errors import MemawareError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Memorization-aware training (MAT) and its baselines.")
console = Console(stderr=True)


def fail(message: str, code: int = 2):
    """Print `error: message` on one line to stderr and exit with `code`."""
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors(fn):
    """Decorator for commands: MemawareError (and OSError on user paths) -> one-line error, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MemawareError as err:
            fail(str(err))
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper


def show_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"memaware {__version__}")
        raise typer.Exit()


@app.callback()
def options(version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True,
                                         help="print the version and exit")):
    """Memorization-aware training (MAT) and its baselines."""


COMMAND_MODULES = ("core", "data", "featurize", "predict", "sweep", "analyze")


def register_commands() -> None:
    """Import the modules that register the commands (none imports PyTorch before a command runs)."""
    for module in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{module}")


def main() -> None:
    register_commands()
    app(prog_name="memaware")

