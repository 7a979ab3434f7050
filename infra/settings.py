"""Typed, immutable settings for every ModelBus process.

Settings are built once at the entry point (CLI command, consumer main) and
passed down; nothing reads ``os.environ`` deeper in the code. Each field is
documented because the settings table in docs/settings.md is generated from these
descriptions. Sources, highest priority first: keyword arguments, environment
variables (``MODELBUS_<SECTION>__<FIELD>``, e.g. ``MODELBUS_KAFKA__BOOTSTRAP_SERVERS``),
the TOML file named by ``MODELBUS_CONFIG``, then the defaults below.

Secrets are ``SecretStr`` so that ``repr``/logging never shows them.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class SettingsError(Exception):
    """Settings could not be built; the message names the offending source and field."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = Field(
        "127.0.0.1:19092", description="Comma-separated host:port list of Kafka brokers (tansu when embedded)."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security.protocol."
    )
    sasl_mechanism: str | None = Field(None, description="SASL mechanism, e.g. PLAIN, SCRAM-SHA-512.")
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret).")
    ssl_ca_location: str | None = Field(None, description="Path to the CA bundle used to verify brokers.")
    ssl_certificate_location: str | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_key_location: str | None = Field(None, description="Client private key for mutual TLS.")
    ssl_key_password: SecretStr | None = Field(None, description="Password of the client private key (secret).")
    schema_registry_url: str | None = Field(
        None,
        description="Confluent Schema Registry URL. Unset: Avro single-object encoding, no registry needed.",
    )
    schema_registry_auth: SecretStr | None = Field(None, description="Registry basic auth 'user:password' (secret).")
    topic_prefix: str = Field("modelbus", description="Prefix of every ModelBus topic name.")
    default_partitions: int = Field(3, ge=1, description="Partitions of event topics created up front.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of topics created up front.")
    retention_ms: int = Field(7 * 24 * 3600 * 1000, description="retention.ms of event topics.")
    session_timeout_ms: int = Field(
        6000, ge=1000, description="Consumer group session timeout; tansu waits half of it on every join."
    )
    heartbeat_interval_ms: int = Field(1000, ge=100, description="Consumer heartbeat interval.")
    max_poll_interval_ms: int = Field(
        300000, ge=10000, description="Longest gap between polls before the group evicts a consumer."
    )
    max_message_bytes: int = Field(
        1_000_000, ge=10_000,
        description="Largest Kafka record ModelBus sends: producers refuse bigger events; consumers dead-letter "
        "bigger records they meet (truncated to fit). Keep it at or below the broker's message.max.bytes.",
    )
    extra: dict[str, str] = Field(
        default_factory=dict, description="Extra librdkafka properties passed through verbatim."
    )
    faust_single_record_batches: bool = Field(
        True,
        description="faust agents send one record per batch. Needed on tansu, whose high watermark is wrong "
        "after a multi-record batch (faust would then recover table changelogs short); set false on Apache Kafka.",
    )
    faust_recovery_stall_s: float = Field(
        60.0, gt=0,
        description="A faust changelog partition that reports records but delivers none for this long during table "
        "recovery is given up as recovered (logged as an error), so the agents decide again; seen after the "
        "embedded broker restarts without its log.",
    )


class TritonSettings(_Section):
    grpc_url: str = Field("127.0.0.1:18001", description="Triton gRPC endpoint host:port.")
    http_url: str = Field("127.0.0.1:18000", description="Triton HTTP endpoint host:port (health, repository API).")
    metrics_url: str = Field("http://127.0.0.1:18002/metrics", description="Triton Prometheus metrics URL.")
    repository: str = Field(
        "", description="Model repository: a directory or s3://bucket/prefix. Empty: <data_dir>/triton-repo."
    )
    backend: Literal["python", "pytorch"] = Field(
        "python",
        description="Where the TorchScript runs: 'python' (embedded: inside the Python-backend model) or "
        "'pytorch' (production images: a libtorch step model the Python-backend model calls over BLS).",
    )
    instance_count: int = Field(1, ge=1, description="Model instances per deployed model.")
    max_batch_size: int = Field(64, ge=1, description="max_batch_size written to config.pbtxt.")
    keep_versions: int = Field(3, ge=1, description="Versions kept in the repository for rollback.")
    server_binary: str = Field("", description="tritonserver binary; empty: the one bundled in nvidia-pytriton.")
    telemetry: bool = Field(True, description="Emit one InferenceTelemetry event per request from the served model.")
    telemetry_buffer: int = Field(
        10000, ge=1, description="Bound of the in-model telemetry buffer; overflow is counted.")
    nan_policy: Literal["auto", "reject", "impute"] = Field(
        "auto",
        description="NaN in a numeric input: 'auto' lets the model impute it (training-split mean) in the inputs "
        "it was trained with nulls in (signature 'missing': 'impute') and answers INVALID_ARGUMENT elsewhere; "
        "'reject' (strict) always answers INVALID_ARGUMENT; 'impute' always imputes. Infinite values are always "
        "rejected.",
    )


class ClickHouseUserSettings(_Section):
    """One user of the embedded ClickHouse server (an entry of ``clickhouse.server_users``)."""

    password: SecretStr | None = Field(None, description="The user's password (secret); unset: no password.")
    readonly: Literal[0, 1, 2] = Field(
        2, description="ClickHouse's readonly level of every request of the user: 1 reads only, 2 reads and "
        "changes settings (what Grafana's ClickHouse data source needs: it sends settings such as `limit`), "
        "0 may also write."
    )


class ClickHouseSettings(_Section):
    url: str | None = Field(
        None,
        description="ClickHouse HTTP(S) URL, e.g. https://ch:8443. Unset: the embedded chdb engine.",
    )
    user: str = Field("default", description="ClickHouse user.")
    password: SecretStr | None = Field(None, description="ClickHouse password (secret).")
    database: str = Field("modelbus", description="Database holding every ModelBus table.")
    chdb_path: str = Field("", description="Data directory of embedded chdb; empty: <data_dir>/chdb.")
    http_port: int = Field(
        18123, description="Loopback port where the embedded engine's owner serves ClickHouse's HTTP interface."
    )
    server_users: dict[str, ClickHouseUserSettings] = Field(
        default_factory=lambda: {"dashboard": {"readonly": 2}}, validate_default=True,
        description="Users the embedded ClickHouse server accepts besides `user` (who reads and writes with "
        "`password`): `{\"name\": {\"password\": \"...\", \"readonly\": 2}}`. The default read-only "
        "`dashboard` user lets dashboards and Grafana read without being able to write.",
    )
    read_user: str = Field(
        "", description="User that read-only clients (`modelbus dashboard`) connect as. Empty: on the embedded "
        "server the first read-only entry of `server_users` (`dashboard` by default); on a real server `user`.")
    read_password: SecretStr | None = Field(
        None, description="`read_user`'s password (secret). Unset on the embedded server: its `server_users` entry's.")
    session_timeout_s: int = Field(
        60, ge=1, description="Idle seconds after which an embedded ClickHouse session (`session_id`) and its "
        "temporary tables expire, unless the request gives `session_timeout`."
    )
    max_session_timeout_s: int = Field(
        3600, ge=1, description="Largest `session_timeout` a client may ask the embedded ClickHouse server for."
    )
    telemetry_ttl_days: int = Field(30, ge=1, description="Retention of raw inference telemetry rows.")
    metadata_ttl_days: int = Field(3650, ge=1, description="Retention of lifecycle metadata rows.")


class ArtifactSettings(_Section):
    root: str = Field(
        "", description="Artifact store root: a directory or s3://bucket/prefix. Empty: <data_dir>/artifacts.")
    s3_endpoint_url: str | None = Field(None, description="Custom S3 endpoint (MinIO, moto). Unset: AWS.")
    s3_region: str | None = Field(None, description="S3 region; unset: the standard AWS chain decides.")
    multipart_threshold_mb: int = Field(64, ge=5, description="Files above this size upload in parts.")


class StackSettings(_Section):
    data_dir: str = Field("var/modelbus", description="Where the embedded stack keeps data, logs and pid files.")
    host: str = Field("127.0.0.1", description="Address the embedded stack binds; loopback by default.")
    kafka_port: int = Field(19092, description="Embedded tansu broker port.")
    kafka_storage: str = Field(
        "memory://tansu/",
        description="Where the embedded tansu keeps its log: memory:// (lost on every restart) or s3://<bucket>/ "
        "(durable: topics, messages and offsets survive a restart; endpoint from artifacts.s3_endpoint_url, "
        "credentials from the usual AWS_* variables). memory:// stays the default: on the embedded S3, s3:// "
        "measured 0.2-0.5x the produce rate.",
    )
    triton_grpc_port: int = Field(18001, description="Embedded Triton gRPC port.")
    triton_http_port: int = Field(18000, description="Embedded Triton HTTP port.")
    triton_metrics_port: int = Field(18002, description="Embedded Triton metrics port.")
    start_timeout_s: float = Field(60.0, gt=0, description="How long `up` waits for each part to become healthy.")
    min_free_mb: int = Field(
        512, ge=0, description="`up` refuses to start with less free disk than this under data_dir.")
    consumers: dict[str, int] = Field(
        default_factory=dict,
        description="Instances of each consumer `modelbus up` runs, e.g. {training = 2} (a group scales by "
        "running more); a consumer not named runs once, 0 turns it off.",
    )
    consumer_args: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Extra command-line options per consumer under `modelbus up`, e.g. {drift-monitor = "
        "[\"--interval\", \"2\"]} (its options: `modelbus consumer run NAME -- --help`).",
    )
    consumer_grace_s: float = Field(
        8.0, gt=0, description="A consumer that exits sooner than this after `up` started it fails `up`; "
        "a later crash is restarted.",
    )
    restart_backoff_max_s: float = Field(
        30.0, gt=0,
        description="Longest wait before a crashed consumer is restarted (the wait doubles per quick crash).",
    )


class TrainingSettings(_Section):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Training device; auto picks CUDA when present.")
    checkpoint_dir: str = Field("", description="Local checkpoint directory; empty: <data_dir>/checkpoints.")
    lease_s: float = Field(30.0, gt=0, description="A run whose owner has not renewed its lease this long is retried.")
    default_spec: dict[str, Any] = Field(
        default_factory=dict,
        description="TrainingSpec fields every run starts from (runs triggered by DatasetCreated use just this); "
        "a dataset tag 'training_spec' (JSON) and a request's spec_json override it, in that order.",
    )
    search_parallelism: int = Field(
        2, ge=1, description="Trials a hyperparameter search runs at once unless its search space says otherwise."
    )


class ServingSettings(_Section):
    primary_metric_margin: float = Field(
        0.01, ge=0, description="Margin of the champion comparison (primary metric units, on the same test rows)."
    )
    champion_rule: Literal["superiority", "non_inferiority"] = Field(
        "non_inferiority", description="Champion rule: the gain's CI lower bound must exceed +margin "
                                       "(superiority) or -margin (non_inferiority).")
    baseline_rule: Literal["superiority", "non_inferiority"] = Field(
        "non_inferiority", description="Rule of the comparison with every baseline (ties at the ceiling pass "
                                       "non_inferiority).")
    baseline_margin: float = Field(0.01, ge=0, description="Margin of the baseline comparisons.")
    confidence: float = Field(0.95, ge=0.5, lt=1, description="Confidence level of the gate's paired intervals.")
    min_slice_rows: int = Field(
        30, ge=1, description="Slices with fewer test rows are reported by the gate but do not decide.")
    slice_tolerance: float = Field(
        0.05, ge=0, description="A slice rejects when credibly worse than the champion by more than this.")
    policies: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per model name overrides of the gate policy (same keys as above)."
    )
    reconcile_interval_s: float = Field(
        15.0, gt=0,
        description="How often the deployer reloads champions missing from Triton (a restarted server heals).",
    )
    metrics_interval_s: float = Field(15.0, gt=0, description="How often the metrics scraper reads Triton's metrics.")


class MonitoringSettings(_Section):
    drift_window_s: int = Field(300, ge=1, description="Window of live traffic compared with the reference.")
    psi_threshold: float = Field(0.2, gt=0, description="PSI above this is drift.")
    p_value_threshold: float = Field(0.01, gt=0, lt=1, description="KS/chi-squared p-value below this is drift.")
    min_samples: int = Field(200, ge=1, description="Fewer live samples than this never raise drift.")
    drift_rule: Literal["both", "either"] = Field(
        "both",
        description="'both': drift needs PSI above its threshold AND the test's p-value below its threshold (large "
        "samples make tiny shifts significant, PSI keeps them from alerting); 'either': one breach is enough.",
    )
    retrain_on_drift: bool = Field(False, description="Opt-in: turn DriftDetected into TrainingRequested.")
    drift_persist_windows: int = Field(
        1, ge=1, le=48, description="An alert needs the breach in this many consecutive windows (each "
        "drift_window_s long, the last one ending now), so a burst does not alert; 3 is a calm production value.")
    drift_min_effect: float = Field(
        0.0, ge=0, le=1, description="Minimum effect size for drift: the KS statistic (numeric features) or the "
        "total variation distance (categorical), so a large sample's tiny shift does not alert.")
    retrain_cooldown_s: int = Field(3600, ge=0, description="After a retraining request for a model (drift or "
                                    "performance), none other for this long.")
    performance_window_s: int = Field(3600, ge=60, description="Window of served rows whose live quality is "
                                      "compared with the model's registered test quality.")
    performance_max_drop: float = Field(
        0.05, gt=0, description="Performance drift when live accuracy is below the registered test accuracy by "
        "more than this (classification), or live RMSE above the test RMSE by more than this share (regression). "
        "Realised from outcomes when at least performance_min_rows have one; estimated from confidences "
        "(classification, CBPE) otherwise.")
    performance_min_rows: int = Field(200, ge=1, description="Fewer rows than this never raise performance drift.")
    retrain_on_performance_drop: bool = Field(False, description="Opt-in: turn performance drift into "
                                              "TrainingRequested (reason 'performance').")


class Settings(BaseSettings):
    """All settings of one ModelBus process."""

    model_config = SettingsConfigDict(
        env_prefix="MODELBUS_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    kafka: KafkaSettings = KafkaSettings()
    triton: TritonSettings = TritonSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    artifacts: ArtifactSettings = ArtifactSettings()
    stack: StackSettings = StackSettings()
    training: TrainingSettings = TrainingSettings()
    serving: ServingSettings = ServingSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    log_level: str = Field("INFO", description="Python log level of ModelBus processes.")

    @field_validator("log_level")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    # Derived paths: one place decides the defaults that depend on data_dir.
    @property
    def data_dir(self) -> Path:
        return Path(self.stack.data_dir).expanduser().resolve()

    @property
    def artifact_root(self) -> str:
        return self.artifacts.root or str(self.data_dir / "artifacts")

    @property
    def triton_repository(self) -> str:
        return self.triton.repository or str(self.data_dir / "triton-repo")

    @property
    def chdb_path(self) -> Path:
        return Path(self.clickhouse.chdb_path or self.data_dir / "chdb")

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.training.checkpoint_dir or self.data_dir / "checkpoints")

    def topic(self, name: str) -> str:
        """Full topic name for a logical topic (``datasets.created`` → ``modelbus.datasets.created``)."""
        return f"{self.kafka.topic_prefix}.{name}"

    def group(self, name: str) -> str:
        """Consumer group of a ModelBus consumer, prefixed like the topics so deployments sharing a cluster
        never share groups (``training`` → ``modelbus.training``)."""
        return f"{self.kafka.topic_prefix}.{name}"

    def with_overrides(self, **sections: dict[str, Any]) -> Settings:
        """Copy with some section fields replaced (tests and the stack supervisor pick free ports)."""
        data = self.model_dump()
        for section, values in sections.items():
            if isinstance(data.get(section), dict):
                data[section] = {**data[section], **values}
            else:
                data[section] = values
        return _build(data)


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the optional TOML file named by ``MODELBUS_CONFIG`` (sections match the settings sections)."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused by __call__
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("MODELBUS_CONFIG")
        if not path:
            return {}
        try:
            with open(path, "rb") as fh:
                return tomllib.load(fh)
        except FileNotFoundError as exc:
            raise SettingsError(f"MODELBUS_CONFIG={path}: file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"MODELBUS_CONFIG={path}: invalid TOML: {exc}") from exc


def _build(data: dict[str, Any]) -> Settings:
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise SettingsError(_explain(exc)) from exc


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        env = "MODELBUS_" + "__".join(str(p).upper() for p in err["loc"])
        parts.append(f"{loc} ({env}): {err['msg']}")
    return "invalid settings: " + "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    """Build settings at an entry point; raises SettingsError with one readable line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_explain(exc)) from exc
