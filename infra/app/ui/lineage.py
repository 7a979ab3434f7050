"""The lineage page: a model version, or one served prediction, traced back to the event that started it.

The chain is upstream event (DatasetCreated) → dataset version → training run
→ registered model → each gate decision (deployments and rejections, in order)
→ the prediction, when one was asked for. Each step shows the ids a person
needs to find it again (event ids, run id, checksums).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from infra.app.dashboard.page import cell
from infra.app.ui import figures as F
from infra.app.ui.pages import Context, Page, Query
from infra.app.ui.queries import one, parse_version


def _node(kind: str, title: str, detail: str, state: str = "ok", href: str = "") -> dict[str, str]:
    return {"kind": kind, "title": title, "detail": detail, "state": state, "href": href}


def _upstream(m: dict[str, Any]) -> list[dict[str, str]]:
    nodes = []
    if m.get("dataset_event_id"):
        nodes.append(_node("upstream event", f"DatasetCreated from {m['dataset_producer']}",
                           f"event {m['dataset_event_id']} at {cell(m['dataset_created_at'])}"))
        nodes.append(_node("dataset version", f"{m['dataset_name']} {m['dataset_version']}",
                           f"{m['dataset_rows']} rows, {m['dataset_uri']}, checksum {m['dataset_checksum']}"))
    else:
        nodes.append(_node("dataset version", f"{m['dataset_name']} {m['dataset_version']}",
                           "its DatasetCreated event is not in the metrics store (expired or never sunk)", "none"))
    run_state = "ok" if m.get("run_status") == "finished" else ("none" if m.get("run_status") is None else "bad")
    code = m["code_version"] or "unrecorded"
    nodes.append(_node("training run", m["run_id"], f"status {m.get('run_status') or 'unknown'}, seed "
                       f"{m.get('run_seed')}, {cell(m.get('run_duration_s'))} s, code {code}", run_state,
                       "/compare?" + urlencode({"run": m["run_id"]})))
    nodes.append(_node("model", f"{m['model_name']} v{m['model_version']}",
                       f"{m['primary_metric']} {cell(m['metric_value'])}, artifact {m['artifact_uri']}, "
                       f"checksum {m['checksum']}, event {m['model_event_id']}", "ok",
                       "/?" + urlencode({"model": m["model_name"]})))
    return nodes


def _decisions(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    if not rows:
        return [_node("gate decision", "awaiting gate", "no decision recorded yet", "none")]
    out = []
    for d in rows:
        failed = [n for n, ok in zip(d["check_names"] or [], d["check_passed"] or []) if not ok]
        passed = len(d["check_names"] or []) - len(failed)
        checks = f"checks passed {passed}/{len(d['check_names'] or [])}" + (
            f"; failed: {', '.join(failed)}" if failed else "")
        kind = "deployment" if d["decision"] == "deployed" else "gate decision"
        out.append(_node(kind, f"{d['decision']} ({d['detail']})", f"{checks}; at {cell(d['event_time'])}, event "
                         f"{d['event_id']}", "ok" if d["decision"] == "deployed" else "bad"))
    return out


def lineage(ctx: Context, query: Query) -> Page:
    request_id = one(query, "request_id")
    prediction = None
    if request_id:
        served = ctx.reader.rows("prediction", request_id=request_id)
        if not served:
            return _page(message=f"No served request with id {request_id} in the metrics store.",
                         request_id=request_id)
        prediction = served[0]
        model, version = prediction["model_name"], int(prediction["model_version"])
    elif not one(query, "model"):
        return _page(message="Name a model version, or a prediction's request id, to trace it.")
    else:
        model, version = parse_version(query)
    found = ctx.reader.rows("lineage_model", model=model, version=version)
    if not found:
        return _page(message=f"No registered model {model} v{version}.", model=model, version=version,
                     request_id=request_id)
    nodes = _upstream(found[0]) + _decisions(ctx.reader.rows("lineage_decisions", model=model, version=version))
    if prediction is not None:
        nodes.append(_node("prediction", f"{prediction['prediction']} (confidence {cell(prediction['confidence'])})",
                           f"request {request_id}, {prediction['batch_size']} rows, status {prediction['status']}, "
                           f"at {cell(prediction['event_time'])}", "ok" if prediction["status"] == "ok" else "bad"))
    title = f"Lineage of {model} v{version}" + (f", request {request_id}" if request_id else "")
    return _page(title=title, nodes=nodes, figure=F.to_json(F.lineage_graph(nodes)), model=model,
                 version=version, request_id=request_id)


def _page(title: str = "Lineage", **context: Any) -> Page:
    defaults: dict[str, Any] = {"nodes": [], "figure": None, "message": None, "model": "", "version": None,
                                "request_id": ""}
    return "lineage.html", title, {**defaults, **context}
