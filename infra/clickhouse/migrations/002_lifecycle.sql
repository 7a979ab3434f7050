-- Lifecycle metadata, one table per event type, fed by the metadata sink.
--
-- Every table keeps the EventHeader (event_id, event_time, producer, correlation_id,
-- parent_event_ids) so lineage can be walked in SQL, and is a ReplacingMergeTree whose sorting
-- key ends in event_id with otherwise event-determined values: a redelivered event collapses into
-- one row. Readers use FINAL (the views below do).

CREATE TABLE IF NOT EXISTS $database.datasets
(
    event_id         String,
    event_time       DateTime64(6, 'UTC'),
    producer         LowCardinality(String),
    correlation_id   String,
    parent_event_ids Array(String),
    name             String,
    version          String,
    uri              String,
    metadata_uri     String,
    format           LowCardinality(String),
    task             LowCardinality(String),
    label_column     String,
    feature_columns  Array(String),
    slice_columns    Array(String),
    time_column      Nullable(String),
    image_shape      Array(Int32),
    schema           Map(String, String),
    row_count        Int64,
    size_bytes       Int64,
    checksum         String,
    warnings         Array(String),
    source           String,
    parent_version   Nullable(String),
    tags             Map(String, String),
    inserted_at      DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
ORDER BY (name, version, event_id)
TTL toDateTime(event_time) + INTERVAL $metadata_ttl_days DAY;

-- ColumnStats of datasets (owner_kind 'dataset', owner_version = dataset version) and the
-- reference stats of registered models (owner_kind 'model', owner_version = model version):
-- the drift monitor's reference distributions.
CREATE TABLE IF NOT EXISTS $database.column_stats
(
    event_id         String,
    event_time       DateTime64(6, 'UTC'),
    producer         LowCardinality(String),
    correlation_id   String,
    parent_event_ids Array(String),
    owner_kind       LowCardinality(String),
    owner_name       String,
    owner_version    String,
    position         UInt32,
    column           String,
    dtype            LowCardinality(String),
    kind             LowCardinality(String),
    count            Int64,
    null_count       Int64,
    mean             Nullable(Float64),
    std              Nullable(Float64),
    min              Nullable(Float64),
    max              Nullable(Float64),
    bin_edges        Array(Float64),
    bin_counts       Array(Int64),
    categories       Array(String),
    category_counts  Array(Int64),
    distinct_count   Nullable(Int64),
    inserted_at      DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
ORDER BY (owner_kind, owner_name, owner_version, column, event_id)
TTL toDateTime(event_time) + INTERVAL $metadata_ttl_days DAY;

CREATE TABLE IF NOT EXISTS $database.training_requests
(
    event_id          String,
    event_time        DateTime64(6, 'UTC'),
    producer          LowCardinality(String),
    correlation_id    String,
    parent_event_ids  Array(String),
    request_id        String,
    dataset_name      String,
    dataset_version   Nullable(String),
    model_name        Nullable(String),
    spec_json         String,
    search_space_json Nullable(String),
    n_trials          Int32,
    search_id         Nullable(String),
    trial_number      Nullable(Int32),
    reason            LowCardinality(String),
    inserted_at       DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
ORDER BY (dataset_name, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL $metadata_ttl_days DAY;

CREATE TABLE IF NOT EXISTS $database.training_runs
(
    event_id         String,
    event_time       DateTime64(6, 'UTC'),
    producer         LowCardinality(String),
    correlation_id   String,
    parent_event_ids Array(String),
    run_id           String,
    attempt          Int32,
    status           LowCardinality(String),
    dataset_name     String,
    dataset_version  String,
    model_name       String,
    epoch            Nullable(Int32),
    metrics          Map(String, Float64),
    params_json      String,
    seed             Int32,
    code_version     String,
    environment      Map(String, String),
    duration_s       Nullable(Float64),
    artifact_uris    Map(String, String),
    failure_reason   Nullable(String),
    search_id        Nullable(String),
    trial_number     Nullable(Int32),
    request_id       Nullable(String),
    inserted_at      DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
ORDER BY (run_id, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL $metadata_ttl_days DAY;

CREATE TABLE IF NOT EXISTS $database.models
(
    event_id         String,
    event_time       DateTime64(6, 'UTC'),
    producer         LowCardinality(String),
    correlation_id   String,
    parent_event_ids Array(String),
    model_name       String,
    model_version    Int32,
    run_id           String,
    dataset_name     String,
    dataset_version  String,
    artifact_uri     String,
    checksum         String,
    task             LowCardinality(String),
    primary_metric   LowCardinality(String),
    higher_is_better Bool,
    metrics          Map(String, Float64),
    baseline_metrics Map(String, Map(String, Float64)),
    slice_metrics    Nested(column String, value String, count Int64, metrics Map(String, Float64)),
    signature_json   String,
    labels           Array(String),
    params_json      String,
    code_version     String,
    report_uri       Nullable(String),
    inserted_at      DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
ORDER BY (model_name, model_version, event_id)
TTL toDateTime(event_time) + INTERVAL $metadata_ttl_days DAY;

CREATE TABLE IF NOT EXISTS $database.deployments
(
    event_id         String,
    event_time       DateTime64(6, 'UTC'),
    producer         LowCardinality(String),
    correlation_id   String,
    parent_event_ids Array(String),
    model_name       String,
    model_version    Int32,
    previous_version Nullable(Int32),
    action           LowCardinality(String),
    artifact_uri     String,
    checksum         String,
    backend          LowCardinality(String),
    repository_uri   String,
    primary_metric   LowCardinality(String),
    metric_value     Nullable(Float64),
    champion_metric  Nullable(Float64),
    metrics          Map(String, Float64),
    checks           Nested(name String, passed Bool, value Nullable(Float64), threshold Nullable(Float64), detail String),
    run_id           String,
    dataset_version  String,
    inserted_at      DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
ORDER BY (model_name, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL $metadata_ttl_days DAY;

CREATE TABLE IF NOT EXISTS $database.deployment_rejections
(
    event_id         String,
    event_time       DateTime64(6, 'UTC'),
    producer         LowCardinality(String),
    correlation_id   String,
    parent_event_ids Array(String),
    model_name       String,
    model_version    Int32,
    stage            LowCardinality(String),
    reason           String,
    checks           Nested(name String, passed Bool, value Nullable(Float64), threshold Nullable(Float64), detail String),
    champion_version Nullable(Int32),
    primary_metric   LowCardinality(String),
    metric_value     Nullable(Float64),
    champion_metric  Nullable(Float64),
    inserted_at      DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
ORDER BY (model_name, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL $metadata_ttl_days DAY;

CREATE TABLE IF NOT EXISTS $database.drift_events
(
    event_id          String,
    event_time        DateTime64(6, 'UTC'),
    producer          LowCardinality(String),
    correlation_id    String,
    parent_event_ids  Array(String),
    model_name        String,
    model_version     Int32,
    feature           String,
    window_start      DateTime64(6, 'UTC'),
    window_end        DateTime64(6, 'UTC'),
    psi               Float64,
    test              LowCardinality(String),
    statistic         Float64,
    p_value           Float64,
    psi_threshold     Float64,
    p_value_threshold Float64,
    sample_size       Int64,
    action            LowCardinality(String),
    inserted_at       DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
ORDER BY (model_name, event_time, feature, event_id)
TTL toDateTime(event_time) + INTERVAL $metadata_ttl_days DAY;

-- One row per Prometheus sample of a scrape (sample_index keeps samples of one event apart).
-- Scrapes are frequent, so this table is partitioned and kept as long as telemetry.
CREATE TABLE IF NOT EXISTS $database.server_metrics
(
    event_id         String,
    event_time       DateTime64(6, 'UTC'),
    producer         LowCardinality(String),
    correlation_id   String,
    parent_event_ids Array(String),
    server           LowCardinality(String),
    sample_index     UInt32,
    name             LowCardinality(String),
    labels           Map(LowCardinality(String), String),
    value            Float64,
    inserted_at      DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (server, name, event_time, event_id, sample_index)
TTL toDateTime(event_time) + INTERVAL $telemetry_ttl_days DAY;
