"""The entry point shared by the sinks that run on the ``ConsumerRunner`` (metadata sink, outcome sink).

``python -m consumers.<sink> [--group G] [--idle-timeout S]``: settings built here, from the environment;
ClickHouse through ``infra.clickhouse.connect``; the runner stops on SIGTERM after committing.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, Callable

from infra.logs import configure_logging


def sink_main(argv: list[str] | None, *, description: str, group: str, log: logging.Logger,
              build: Callable[..., Any], stats: Callable[[], Any] = lambda: None) -> None:
    """Parse the options, connect, run ``build(settings, store, group_id=...)`` and log its stats at exit."""
    from infra.clickhouse import connect
    from infra.settings import load_settings

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--group", default=None, help=f"Kafka consumer group (default: <topic_prefix>.{group})")
    parser.add_argument("--idle-timeout", type=float, default=None, help="exit after this many idle seconds")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    store = connect(settings)
    try:
        result = build(settings, store, group_id=args.group).run(idle_timeout=args.idle_timeout)
        log.info("%s stopped: %s %s", group, result, stats() or "")
    finally:
        store.close()
