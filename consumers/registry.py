"""The one list of ModelBus consumers: stable name → module and what it does.

Every consumer is also ``python -m consumers.<module>``; ``modelbus consumer``,
``modelbus up``, the compose file and the Kubernetes manifests run the same names.
"""

from __future__ import annotations

CONSUMERS: dict[str, tuple[str, str]] = {
    "training": ("consumers.training", "dataset-created / training-requested → trained, registered model"),
    "search-coordinator": ("consumers.search", "hyperparameter search: fans trials out, registers the best"),
    "deployer": ("consumers.deployer", "model-registered → promotion gate → Triton → model-deployed/rejected"),
    "telemetry-sink": ("consumers.telemetry_sink", "inference telemetry → ClickHouse"),
    "metadata-sink": ("consumers.metadata_sink", "lifecycle events → ClickHouse metadata tables"),
    "outcome-sink": ("consumers.outcome_sink", "outcomes → ClickHouse, joined to the rows they are the truth of"),
    "drift-monitor": ("consumers.drift", "live traffic vs reference → drift-detected (→ retraining, opt-in)"),
    "metrics-scraper": ("consumers.scraper", "Triton Prometheus metrics → serving-metrics topic"),
}
