"""Turns expected failures into one readable line and a non-zero exit code."""

from __future__ import annotations

import logging

from rich.console import Console

err_console = Console(stderr=True)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is enough for the user (no traceback)."""
    from infra.errors import ModelBusError
    from infra.settings import SettingsError
    from infra.storage import StorageError
    from schemas.codec import SerializationError

    return (ModelBusError, SettingsError, StorageError, SerializationError, FileNotFoundError, PermissionError)


def run_cli(app) -> int:
    try:
        app(standalone_mode=False)
        return 0
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that decides what the user sees
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 1
        if isinstance(exc, expected_errors()):
            err_console.print(f"[bold red]error:[/] {exc}")
            return 2
        logging.getLogger("modelbus").exception("unexpected error")
        err_console.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {exc}")
        return 1
