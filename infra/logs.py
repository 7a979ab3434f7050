"""One log format for every ModelBus process, so lines from consumers, Triton models and the chdb owner line up."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str | int) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)
