"""``modelbus`` entry point: builds settings once and mounts each package's sub-commands.

Each concern owns its commands (``producers/cli.py`` for datasets, ``serving/cli.py``
for models, ...); this module only wires them together and turns expected errors
into one clear line instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="ModelBus: event-driven deep learning platform.")

# (module, attribute, mount name or None to merge its commands at top level)
_SUBCOMMANDS: list[tuple[str, str, str | None]] = [
    ("infra.cli.stack", "app", None),          # up / status / down / topics
    ("producers.cli", "dataset_app", "dataset"),
    ("trainer.cli", "app", None),              # train / runs
    ("serving.cli", "app", None),              # models / predict / rollback
    ("consumers.cli", "app", "consumer"),      # long-running consumers
    ("infra.cli.metrics", "app", None),        # sql / dashboard
    ("infra.cli.demo", "app", None),           # demo / bench
]

for _module, _attr, _mount in _SUBCOMMANDS:
    try:
        _sub = getattr(importlib.import_module(_module), _attr)
    except ModuleNotFoundError as _exc:  # a concern not built yet; any other import error is a bug and raises
        if _exc.name != _module:
            raise
        continue
    if _mount is None:
        for _cmd in _sub.registered_commands:
            app.registered_commands.append(_cmd)
        for _grp in _sub.registered_groups:
            app.registered_groups.append(_grp)
    else:
        app.add_typer(_sub, name=_mount)


def main() -> None:
    from infra.cli.errors import run_cli

    sys.exit(run_cli(app))


if __name__ == "__main__":
    main()
