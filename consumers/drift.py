"""Drift monitor: live traffic of each serving model version vs the reference registered with it.

Every ``interval`` seconds the monitor asks ClickHouse (``consumers.drift_sql``)
for the distributions of the last ``monitoring.drift_window_s`` of telemetry
binned with each model's reference bins, with PSI and the KS / chi-squared
statistic computed in SQL; only the p-values are finished here with scipy.
A feature drifts when it has at least ``min_samples`` live requests and its PSI
and p-value breach ``psi_threshold`` / ``p_value_threshold`` (both, or either:
``monitoring.drift_rule``).

Drift that does not storm: a feature alerts only when the breach holds in each of
the last ``drift_persist_windows`` consecutive windows and its effect size (KS
statistic, or total variation distance) reaches ``drift_min_effect``. Live quality
is watched too (``consumers.drift_performance``): a drop beyond
``performance_max_drop``, realised from outcomes or estimated from confidences,
is a ``DriftDetected`` of kind 'performance' with its numbers.

Each drifted feature is published once per window as ``DriftDetected`` (key:
model name; parents: the model's ModelDeployed and ModelRegistered events).
Repeats are suppressed both from this process's memory and from the
``drift_events`` table, so a restarted or second monitor does not re-alert. With
``monitoring.retrain_on_drift`` (data) or ``retrain_on_performance_drop`` the
monitor also publishes one ``TrainingRequested`` (reason 'drift' or 'performance')
on the newest version of the model's dataset, then none for that model during
``retrain_cooldown_s``: the loop closes without retraining in a loop.

Run: ``python -m consumers.drift [--interval S] [--once]``; tests call ``check_once``.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from scipy import stats as sps

from consumers import drift_sql as Q
from consumers.drift_performance import PERFORMANCE, performance
from infra.kafka import topics as T
from infra.logs import configure_logging
from infra.signals import on_stop_signals
from schemas.events import new_header
from schemas.types import DriftDetected, EventHeader, TrainingRequested

STAGE = "drift"
PRODUCER = f"monitoring.{STAGE}"
EPS = 1e-4  # floor of a bin share in PSI, so an empty bin costs a finite amount

log = logging.getLogger(f"modelbus.{STAGE}")


@dataclass
class DriftResult:
    """One (model version, feature) compared over one window; ``drifted`` says whether it breached."""

    model_name: str
    model_version: int
    feature: str
    kind: str                      # 'numeric' | 'categorical'
    test: str                      # 'ks' | 'chi2'
    psi: float
    statistic: float
    p_value: float
    sample_size: int
    reference_size: int
    buckets: list[str]             # numeric: the bin edges (as text); categorical: categories + '__other__'
    reference_counts: list[float]
    live_counts: list[float]
    window_start: datetime
    window_end: datetime
    status: str = "ok"             # 'ok' | 'drift' | 'insufficient-samples'
    action: str = "none"           # DriftDetected.action: 'none' | 'retrain-requested'
    suppressed: bool = False       # drifted, but already alerted in this window
    event_id: str | None = None    # the DriftDetected published for it
    reference_event_id: str = ""
    effect_size: float = 0.0       # KS statistic (numeric) or total variation distance (categorical)
    windows: int = 1               # consecutive windows breached, up to monitoring.drift_persist_windows
    drift_kind: str = "data"       # DriftDetected.kind: 'data' | 'performance'
    metric: str | None = None      # performance: 'accuracy' | 'rmse', with its test and live values
    baseline_value: float | None = None
    live_value: float | None = None
    estimated: bool = False

    @property
    def drifted(self) -> bool:
        return self.status == "drift"


@dataclass
class MonitorState:
    """What this monitor already sent, so one breach alerts once per window even before the sink stores it."""

    alerts: dict[tuple[str, str], datetime] = field(default_factory=dict)
    retrains: dict[str, datetime] = field(default_factory=dict)


def _p_value(row: dict[str, Any]) -> float:
    """KS: the two-sample asymptotic distribution (as scipy's ks_2samp 'asymp'); chi2: chi2.sf(stat, dof)."""
    if row["test"] == "ks":
        m, n = float(row["ref_n"]), float(row["n"])
        en = round(m * n / (m + n)) if m + n else 0
        return float(sps.kstwo.sf(row["statistic"], en)) if en >= 1 else 1.0
    dof = int(row["dof"])
    return float(sps.chi2.sf(row["statistic"], dof)) if dof > 0 else 1.0


def _breach(psi: float, p_value: float, mon) -> bool:
    psi_hit, p_hit = psi > mon.psi_threshold, p_value < mon.p_value_threshold
    return (psi_hit or p_hit) if mon.drift_rule == "either" else (psi_hit and p_hit)


def _effect(row: dict[str, Any]) -> float:
    """KS statistic for numeric features; total variation distance of the two distributions for categorical."""
    if row["test"] == "ks":
        return float(row["statistic"])
    return 0.5 * sum(abs(a - b) for a, b in zip(row["p_ref"], row["p_live"]))


def _window(store, mon, end: datetime) -> dict[tuple[str, int, str], tuple[dict[str, Any], float, str]]:
    """(model, version, feature) → (SQL row, p-value, status) for the window of drift_window_s ending at end."""
    params = {"window_start": end - timedelta(seconds=mon.drift_window_s), "window_end": end, "eps": EPS}
    out = {}
    for sql in (Q.NUMERIC_SQL, Q.CATEGORICAL_SQL):
        for row in store.query_rows(sql, params):
            p, n = _p_value(row), int(row["n"])
            status = "insufficient-samples" if n < mon.min_samples else (
                "drift" if _breach(row["psi"], p, mon) and _effect(row) >= mon.drift_min_effect else "ok")
            out[(row["model_name"], int(row["model_version"]), row["feature"])] = (row, p, status)
    return out


def compute(store, settings, *, now: datetime | None = None) -> list[DriftResult]:
    """Statistics of every (model version, feature) with a reference and live traffic in the window; no side effects.

    A feature drifts only when the breach holds in each of the last ``drift_persist_windows``
    consecutive windows (the current one and those before it), so a burst does not alert.
    """
    mon = settings.monitoring
    end = (now or datetime.now(UTC)).astimezone(UTC)
    width = timedelta(seconds=mon.drift_window_s)
    current = _window(store, mon, end)
    earlier = [_window(store, mon, end - k * width) for k in range(1, mon.drift_persist_windows)] \
        if any(status == "drift" for _, _, status in current.values()) else []
    results = []
    for key, (row, p, status) in current.items():
        windows = 1 if status == "drift" else 0
        for past in (earlier if status == "drift" else []):
            if past.get(key, (None, None, "ok"))[2] != "drift":
                break
            windows += 1
        if status == "drift" and windows < mon.drift_persist_windows:
            status = "ok"          # breached now, but not yet for long enough
        results.append(DriftResult(
            model_name=key[0], model_version=key[1], feature=key[2], kind=row["kind"], test=row["test"],
            psi=float(row["psi"]), statistic=float(row["statistic"]), p_value=p, sample_size=int(row["n"]),
            reference_size=int(row["ref_n"]), buckets=list(row["buckets"]), reference_counts=list(row["ref_counts"]),
            live_counts=list(row["live_counts"]), window_start=end - width, window_end=end, status=status,
            reference_event_id=row["ref_event_id"], effect_size=_effect(row), windows=max(windows, 1)))
    results.sort(key=lambda r: (r.model_name, r.model_version, r.feature))
    return results


def performance_results(store, settings, now: datetime) -> list[DriftResult]:
    """Live quality against registered test quality (``consumers.drift_performance``), as results to publish."""
    width = timedelta(seconds=settings.monitoring.performance_window_s)
    return [DriftResult(
        model_name=p["model_name"], model_version=p["model_version"], feature=PERFORMANCE, kind="performance",
        test="estimated" if p["estimated"] else "realised", psi=0.0, statistic=p["live"], p_value=1.0,
        sample_size=p["n"], reference_size=0, buckets=[], reference_counts=[], live_counts=[],
        window_start=now - width, window_end=now, status="drift" if p["drifted"] else "ok", drift_kind="performance",
        metric=p["metric"], baseline_value=p["baseline"], live_value=p["live"], estimated=p["estimated"])
        for p in performance(store, settings, now)]


def _us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


class _Publisher:
    """Turns drifted results into events; one instance per check."""

    def __init__(self, store, settings, producer, state: MonitorState, now: datetime):
        self.store, self.settings, self.producer, self.state, self.now = store, settings, producer, state, now
        mon = settings.monitoring
        self.window = timedelta(seconds=mon.drift_window_s)
        self.performance_window = timedelta(seconds=mon.performance_window_s)
        self.cooldown = timedelta(seconds=mon.retrain_cooldown_s)
        since = now - max(self.window, self.performance_window)
        self.stored_alerts = {(r["model_name"], r["feature"]): r["last_alert"]
                              for r in store.query_rows(Q.RECENT_ALERTS_SQL, {"since": since})}
        self.stored_retrains = {r["model_name"] for r in store.query_rows(
            Q.RECENT_RETRAINS_SQL, {"since": now - self.cooldown})}
        self.sent_alerts: list[tuple[str, str]] = []
        self.sent_retrains: list[str] = []

    def _alerted(self, model: str, feature: str) -> bool:
        """Alerted for this feature within its window already (data: drift_window_s; performance: its own)."""
        since = self.now - (self.performance_window if feature == PERFORMANCE else self.window)
        last = self.state.alerts.get((model, feature))
        stored = self.stored_alerts.get((model, feature))
        return (last is not None and last > since) or (stored is not None and stored >= since)

    def _retrained(self, model: str) -> bool:
        """Within the cool-down of an earlier retraining request for this model (this process's or stored)."""
        last = self.state.retrains.get(model)
        return (last is not None and last > self.now - self.cooldown) or model in self.stored_retrains

    def _wants_retrain(self, drifted: list[DriftResult]) -> str | None:
        """The reason of a retraining request these alerts call for under the policy, if any."""
        mon = self.settings.monitoring
        if mon.retrain_on_drift and any(r.drift_kind == "data" for r in drifted):
            return "drift"
        if mon.retrain_on_performance_drop and any(r.drift_kind == "performance" for r in drifted):
            return "performance"
        return None

    def publish(self, results: list[DriftResult]) -> None:
        fresh = [r for r in results if r.drifted]
        for r in fresh:
            r.suppressed = self._alerted(r.model_name, r.feature)
        fresh = [r for r in fresh if not r.suppressed]
        if not fresh:
            return
        lineage = {(row["model_name"], int(row["model_version"])): row for row in self.store.query_rows(
            Q.LINEAGE_SQL, {"models": sorted({r.model_name for r in fresh})})}
        by_model: dict[str, list[DriftResult]] = {}
        for r in fresh:
            by_model.setdefault(r.model_name, []).append(r)
        drift_topic = self.settings.topic(T.MONITORING_DRIFT)
        for model, drifted in by_model.items():
            reason = self._wants_retrain(drifted)
            will_retrain = reason is not None and not self._retrained(model)
            if reason is not None and not will_retrain:
                log.info("drift: %s retraining not requested: in the %ds cool-down of an earlier request "
                         "(stage=%s)", model, self.settings.monitoring.retrain_cooldown_s, STAGE)
            correlation: str | None = None
            for r in drifted:
                info = lineage.get((r.model_name, r.model_version), {})
                parents = [p for p in (info.get("deployed_event_id"), info.get("registered_event_id")
                                       or r.reference_event_id) if p]
                header = new_header(PRODUCER, parents=parents, correlation_id=info.get("deployed_correlation_id")
                                    or info.get("correlation_id") or None)
                r.action = "retrain-requested" if will_retrain else "none"
                r.event_id, correlation = str(header["event_id"]), header["correlation_id"]
                self.producer.send(drift_topic, "DriftDetected", self._drift_value(header, r), key=r.model_name)
                self.sent_alerts.append((r.model_name, r.feature))
                log.warning("drift: %s v%d feature %s psi=%.3f %s=%.4g p=%.3g n=%d (stage=%s, event %s)",
                            r.model_name, r.model_version, r.feature, r.psi, r.test, r.statistic, r.p_value,
                            r.sample_size, STAGE, r.event_id)
            if will_retrain:
                self._request_training(model, drifted, lineage, correlation, reason or "drift")

    def _drift_value(self, header: EventHeader, r: DriftResult) -> DriftDetected:
        mon = self.settings.monitoring
        return {"header": header, "model_name": r.model_name, "model_version": r.model_version,
                "feature": r.feature, "window_start": _us(r.window_start), "window_end": _us(r.window_end),
                "psi": r.psi, "test": r.test, "statistic": r.statistic, "p_value": r.p_value,
                "psi_threshold": mon.psi_threshold, "p_value_threshold": mon.p_value_threshold,
                "sample_size": r.sample_size, "action": r.action, "kind": r.drift_kind,
                "effect_size": r.effect_size, "windows": r.windows, "metric": r.metric,
                "baseline_value": r.baseline_value, "live_value": r.live_value, "estimated": r.estimated}

    def _request_training(self, model: str, drifted: list[DriftResult], lineage: dict, correlation: str | None,
                          reason: str) -> None:
        newest = max(drifted, key=lambda r: r.model_version)
        info = lineage.get((model, newest.model_version), {})
        dataset = info.get("dataset_name")
        if not dataset:
            log.error("drift: %s v%d has no registered dataset; cannot request retraining (stage=%s)",
                      model, newest.model_version, STAGE)
            return
        rows = self.store.query_rows(Q.NEWEST_DATASET_SQL, {"dataset": dataset})
        version = rows[0]["version"] if rows else None  # None: the trainer takes the newest it knows
        spec_json = "{}"
        if info.get("run_id"):
            spec_rows = self.store.query_rows(Q.TRAINING_SPEC_SQL, {"run_id": info["run_id"]})
            if spec_rows and _is_json_object(spec_rows[0]["spec_json"]):
                spec_json = spec_rows[0]["spec_json"]
        parents = [r.event_id for r in drifted] + ([rows[0]["event_id"]] if rows else [])
        header = new_header(PRODUCER, parents=parents, correlation_id=correlation)
        value: TrainingRequested = {
            "header": header, "request_id": f"drift-{uuid.uuid4().hex[:12]}", "dataset_name": dataset,
            "dataset_version": version, "model_name": model, "spec_json": spec_json, "search_space_json": None,
            "n_trials": 0, "search_id": None, "trial_number": None, "reason": reason}
        self.producer.send(self.settings.topic(T.TRAINING_REQUESTED), "TrainingRequested", value, key=dataset)
        self.sent_retrains.append(model)
        log.warning("drift: requested retraining of %s on %s@%s (stage=%s, event %s)", model, dataset,
                    version or "newest", STAGE, header["event_id"])

    def commit(self) -> None:
        """Remember what the broker acknowledged (called after a successful flush)."""
        for key in self.sent_alerts:
            self.state.alerts[key] = self.now
        for model in self.sent_retrains:
            self.state.retrains[model] = self.now


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (TypeError, ValueError):
        return False


def check_once(store, settings, *, producer=None, state: MonitorState | None = None,
               now: datetime | None = None, publish: bool = True) -> list[DriftResult]:
    """One check of every serving model version: compute, then publish new breaches (unless ``publish=False``).

    Raises ``infra.errors.DeliveryError`` when the broker did not acknowledge the
    events; nothing is then remembered as sent, so the next check retries.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    results = compute(store, settings, now=now) + performance_results(store, settings, now)
    if not publish or not any(r.drifted for r in results):
        return results
    own = producer is None
    if own:
        from infra.kafka import EventProducer

        producer = EventProducer(settings, name=PRODUCER)
    pub = _Publisher(store, settings, producer, state if state is not None else MonitorState(), now)
    pub.publish(results)
    producer.flush()
    pub.commit()
    return results


def run_monitor(store, settings, *, interval_s: float, stop: threading.Event | None = None,
                max_checks: int | None = None, producer=None) -> int:
    """Check every ``interval_s`` until ``stop`` is set; a failed check is logged and retried next time."""
    from infra.clickhouse.errors import ClickHouseError
    from infra.errors import DeliveryError
    from infra.kafka import EventProducer

    stop = stop or threading.Event()
    producer = producer or EventProducer(settings, name=PRODUCER)
    state, checks = MonitorState(), 0
    while not stop.is_set():
        try:
            results = check_once(store, settings, producer=producer, state=state)
            drifted = [r for r in results if r.drifted and not r.suppressed]
            log.info("drift: checked %d feature(s), %d drifted now (stage=%s)", len(results), len(drifted), STAGE)
        except (ClickHouseError, DeliveryError) as exc:
            log.error("drift: check failed, retrying in %.0fs: %s (stage=%s)", interval_s, exc, STAGE)
        checks += 1
        if max_checks is not None and checks >= max_checks:
            break
        stop.wait(interval_s)
    return checks


def main(argv: list[str] | None = None) -> None:
    from infra.clickhouse import connect
    from infra.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m consumers.drift",
                                     description="live traffic vs registered reference → drift-detected")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between checks (default 60)")
    parser.add_argument("--once", action="store_true", help="run one check and exit")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be positive")
    settings = load_settings()
    configure_logging(settings.log_level)
    stop = threading.Event()
    on_stop_signals(lambda _signum: stop.set())
    store = connect(settings)
    try:
        run_monitor(store, settings, interval_s=args.interval, stop=stop, max_checks=1 if args.once else None)
    finally:
        store.close()


if __name__ == "__main__":
    main()
