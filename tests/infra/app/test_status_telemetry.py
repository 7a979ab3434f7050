"""``modelbus status`` shows what the in-model telemetry emitters last reported (issue 16: losses and renewals
must be visible without reading JSON files by hand)."""

from __future__ import annotations

from typer.testing import CliRunner

from infra.app.cli.main import app
from serving.telemetry import TelemetryEmitter


def test_status_lists_each_emitter_with_its_losses_and_renewals(base_settings, tmp_path, monkeypatch):
    data = tmp_path / "data"
    emitter = TelemetryEmitter(base_settings, "churn-v1-churn_0", buffer_size=2, start=False,
                               stats_path=data / "telemetry" / "churn_0-v1.json")
    for i in range(5):
        emitter.emit({"request_id": f"r{i}"})
    emitter.report()
    monkeypatch.setenv("MODELBUS_STACK__DATA_DIR", str(data))
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["status"])
    # Not a terminal: each table prints as '# title', a header line and tab-separated rows.
    lines = result.output.splitlines()
    rows = [ln.split("\t") for ln in lines if ln.startswith("churn-v1-churn_0")]
    assert len(rows) == 1, result.output
    header = lines[lines.index(next(ln for ln in lines if ln.startswith("churn-v1-churn_0"))) - 1].split("\t")
    assert header[:6] == ["emitter", "delivered", "dropped", "failed", "invalid", "producer renewals"], header
    assert rows[0][:6] == ["churn-v1-churn_0", "0", "3", "0", "0", "0"], rows   # 3 dropped by the full buffer
