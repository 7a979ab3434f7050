"""Metrics scraper: Triton's Prometheus endpoint → ServerMetrics events on SERVING_METRICS.

Server-side counters (queue and compute time, refused requests) only exist in
Triton; this loop turns them into events so they reach ClickHouse the same way
as everything else. A failed scrape or an undelivered event is logged and
counted, never fatal: metrics are a sample, the next scrape carries the
counters forward. SIGTERM/SIGINT finish the current scrape, flush, and exit 0.

Run: ``python -m consumers.scraper`` (or ``modelbus consumer run metrics-scraper``).
"""

from __future__ import annotations

import argparse
import logging
import threading

from infra.errors import DeliveryError
from infra.kafka.producer import EventProducer
from infra.kafka.topics import SERVING_METRICS
from infra.logs import configure_logging
from infra.settings import Settings
from infra.signals import on_stop_signals
from schemas.types import ServerMetrics
from serving.metrics_scraper import PRODUCER_NAME, STAGE_SCRAPE, run_scraper

log = logging.getLogger("modelbus.consumers.scraper")


class MetricsPublisher:
    """Sends each scrape; delivery failures surface on the next flush and are counted, not raised."""

    def __init__(self, settings: Settings, producer: EventProducer | None = None, flush_timeout_s: float = 10.0):
        self.topic = settings.topic(SERVING_METRICS)
        self.producer = producer or EventProducer(settings, name=PRODUCER_NAME)
        self.flush_timeout_s = flush_timeout_s
        self.sent = 0
        self.undelivered = 0

    def __call__(self, record: ServerMetrics) -> None:
        self.producer.send(self.topic, "ServerMetrics", record, key=record["server"])
        self.sent += 1
        self.flush()

    def flush(self) -> None:
        try:
            self.producer.flush(self.flush_timeout_s)
        except DeliveryError as exc:
            self.undelivered += 1
            log.warning("stage=%s metrics not delivered: %s", STAGE_SCRAPE, exc)


def run(settings: Settings, *, url: str | None = None, interval_s: float | None = None,
        stop: threading.Event | None = None, max_scrapes: int | None = None) -> dict[str, int]:
    """Scrape until ``stop`` is set; returns the counts (scrapes, failures, sent, undelivered)."""
    url = url or settings.triton.metrics_url
    interval = interval_s or settings.serving.metrics_interval_s
    publisher = MetricsPublisher(settings)
    log.info("stage=%s scraping %s every %.1fs into %s", STAGE_SCRAPE, url, interval, publisher.topic)
    counts = run_scraper(url, publisher, interval_s=interval, stop=stop, max_scrapes=max_scrapes)
    publisher.flush()
    return {**counts, "sent": publisher.sent, "undelivered": publisher.undelivered}


def main(argv: list[str] | None = None) -> int:
    from infra.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m consumers.scraper", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="metrics URL (default: triton.metrics_url)")
    parser.add_argument("--interval", type=float, default=None, metavar="S",
                        help="seconds between scrapes (default: serving.metrics_interval_s)")
    parser.add_argument("--max-scrapes", type=int, default=None, help="stop after this many attempts")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    stop = threading.Event()

    def on_signal(signum: int) -> None:
        log.info("stage=%s signal %d: stopping after this scrape", STAGE_SCRAPE, signum)
        stop.set()

    on_stop_signals(on_signal)
    counts = run(settings, url=args.url, interval_s=args.interval, stop=stop, max_scrapes=args.max_scrapes)
    print(counts, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
