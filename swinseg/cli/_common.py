"""Shared CLI plumbing: consoles, the --debug switch, and turning errors into one-line messages."""
from __future__ import annotations

import functools
from collections.abc import Iterable
from enum import Enum
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from swinseg.errors import SwinsegError

F = TypeVar("F", bound=Callable[..., Any])

out = Console()  # results (tables, summaries) on stdout
err = Console(stderr=True)  # progress, warnings and errors on stderr


class _State:
    debug: bool = False


state = _State()


def cli_errors(command: F) -> F:
    """Run a command; print SwinsegError and unexpected errors as one line (traceback with --debug)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            err.print("[red]interrupted[/red]")
            raise typer.Exit(130) from None
        except SwinsegError as error:
            if state.debug:
                raise
            err.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as error:  # noqa: BLE001 - last line of defence for the user
            if state.debug:
                raise
            first_line = (str(error).strip().splitlines() or [""])[0][:300]
            err.print(
                f"[red]error:[/red] {type(error).__name__}: {escape(first_line)} (run with --debug for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def choice_type(name: str, values: Iterable[str]) -> Any:
    """A str Enum for a typer option whose values are `values` (swinseg.choices), so the CLI copies none."""
    return Enum(name, {value.replace("-", "_"): value for value in values}, type=str)


def fail(message: str) -> None:
    """Raise a user-facing error from option checks."""
    raise SwinsegError(message)
