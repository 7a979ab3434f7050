"""Turns expected failures into one readable line and a non-zero exit code."""

from __future__ import annotations

import errno
import logging
from typing import cast

from rich.console import Console
from rich.markup import escape

err_console = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is enough for the user (no traceback)."""
    from infra.errors import ModelBusError
    from infra.settings import SettingsError
    from infra.storage import StorageError
    from schemas.codec import SerializationError

    return (ModelBusError, SettingsError, StorageError, SerializationError, FileNotFoundError, PermissionError)


def run_cli(app) -> int:
    try:
        rv = app(standalone_mode=False)  # click returns typer.Exit(code)'s code instead of raising here
        return rv if isinstance(rv, int) else 0
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return 130
    except Exception as exc:
        import click
        import typer

        usage_errors: tuple[type[BaseException], ...] = (click.exceptions.ClickException,)
        try:  # typer >= 0.20 vendors its own click: its usage errors are not click's classes
            from typer._click.exceptions import ClickException as TyperClickException

            usage_errors += (TyperClickException,)
        except ImportError:
            pass
        if isinstance(exc, usage_errors):
            usage = cast(click.exceptions.ClickException, exc)   # typer's vendored copy has the same API
            usage.show()
            return usage.exit_code
        if isinstance(exc, (click.exceptions.Abort, typer.Abort)):
            return 1
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            err_console.print(f"[bold red]error:[/] disk full: {exc.filename or exc}; free space and run again")
            return 2
        if isinstance(exc, expected_errors()):   # the message is text, not markup: '[a-z0-9_-]' must survive
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
            return 2
        logging.getLogger("modelbus").exception("unexpected error")
        err_console.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {escape(str(exc))}")
        return 1
