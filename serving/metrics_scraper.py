"""Scraping Triton's Prometheus endpoint into ServerMetrics records.

Server-side counters (queue time, compute time, request counts per model
version) complement the in-model telemetry: they see requests Triton refused
before the model ran. The transport is left to the caller: ``scrape_once``
returns a record and ``run_scraper`` hands each record to a ``publish``
callable (an EventProducer send in the deployer, a list in tests).
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from typing import Callable, Iterable

from prometheus_client.parser import text_string_to_metric_families

from schemas.events import new_header
from schemas.types import MetricSample, ServerMetrics
from serving.errors import ServingError

log = logging.getLogger("modelbus.serving.metrics")
PRODUCER_NAME = "serving.metrics_scraper"
STAGE_SCRAPE = "scrape"


class ScrapeError(ServingError):
    """The metrics endpoint could not be read or did not speak the Prometheus text format."""


def parse_samples(text: str, include: Iterable[str] = ()) -> list[MetricSample]:
    """MetricSample dicts from Prometheus text; ``include`` keeps only names with one of these prefixes."""
    prefixes = tuple(include)
    # The parser renames counters to OpenMetrics style (x -> x_total); keep the names Triton exposes.
    plain_counters = {parts[2] for parts in (ln.split() for ln in text.splitlines() if ln.startswith("# TYPE"))
                      if len(parts) >= 4 and parts[3] == "counter" and not parts[2].endswith("_total")}

    def name_of(family, sample) -> str:
        if family.name in plain_counters and sample.name == family.name + "_total":
            return family.name
        return sample.name

    try:
        samples: list[MetricSample] = [
            {"name": name_of(f, s), "labels": {k: str(v) for k, v in s.labels.items()}, "value": float(s.value)}
            for f in text_string_to_metric_families(text) for s in f.samples]
    except (ValueError, TypeError, IndexError) as exc:
        raise ScrapeError(f"not Prometheus text format: {exc}") from exc
    return [s for s in samples if not prefixes or s["name"].startswith(prefixes)]


def fetch(url: str, timeout: float = 5.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        raise ScrapeError(f"cannot scrape {url}: {exc}") from exc


def server_metrics(url: str, text: str, include: Iterable[str] = ()) -> ServerMetrics:
    """A ServerMetrics value for one scrape of ``url``."""
    return {"header": new_header(PRODUCER_NAME), "server": url, "samples": parse_samples(text, include)}


def scrape_once(url: str, include: Iterable[str] = ("nv_",), timeout: float = 5.0) -> ServerMetrics:
    return server_metrics(url, fetch(url, timeout), include)


def run_scraper(url: str, publish: Callable[[ServerMetrics], None], *, interval_s: float = 15.0,
                stop: threading.Event | None = None, max_scrapes: int | None = None,
                include: Iterable[str] = ("nv_",)) -> dict[str, int]:
    """Scrape every ``interval_s`` until ``stop`` is set; a failed scrape is logged and counted, never fatal."""
    stop = stop or threading.Event()
    counts = {"scrapes": 0, "failures": 0}
    include = tuple(include)
    while not stop.is_set() and (max_scrapes is None or counts["scrapes"] + counts["failures"] < max_scrapes):
        try:
            publish(scrape_once(url, include))
            counts["scrapes"] += 1
        except ScrapeError as exc:
            counts["failures"] += 1
            log.warning("%s failed (%d so far): %s", STAGE_SCRAPE, counts["failures"], exc)
        if max_scrapes is not None and counts["scrapes"] + counts["failures"] >= max_scrapes:
            break
        stop.wait(interval_s)
    return counts
