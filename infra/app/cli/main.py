"""``modelbus`` entry point: builds settings once and mounts each package's sub-commands.

Each concern owns its commands (``infra/app/cli/dataset.py`` for datasets, ``infra/app/cli/models.py``
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
    ("infra.app.cli.stack", "app", None),          # up / status / down / topics
    ("infra.app.cli.dataset", "dataset_app", "dataset"),
    ("infra.app.cli.train", "app", None),              # train / runs
    ("infra.app.cli.models", "app", None),              # models / predict / rollback
    ("infra.app.cli.consumer", "app", "consumer"),      # long-running consumers
    ("infra.app.cli.outcome", "app", "outcome"),        # outcome push
    ("infra.app.cli.metrics", "app", None),        # sql / dashboard
    ("infra.app.cli.ui", "app", None),             # ui
    ("infra.app.cli.demo", "app", None),       # demo
    ("bench.cli", "app", None),                # bench (the benchmarks own their command)
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
    from infra.app.cli.errors import run_cli

    sys.exit(run_cli(app))


if __name__ == "__main__":
    main()
