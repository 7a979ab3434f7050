-- DriftDetected v2: performance drift beside data drift, the effect size and how many consecutive windows
-- the breach persisted in. Rows written before v2 read as data drift in one window.
ALTER TABLE $database.drift_events
    ADD COLUMN IF NOT EXISTS kind LowCardinality(String) DEFAULT 'data',
    ADD COLUMN IF NOT EXISTS effect_size Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS windows Int32 DEFAULT 1,
    ADD COLUMN IF NOT EXISTS metric Nullable(String),
    ADD COLUMN IF NOT EXISTS baseline_value Nullable(Float64),
    ADD COLUMN IF NOT EXISTS live_value Nullable(Float64),
    ADD COLUMN IF NOT EXISTS estimated Bool DEFAULT false;
