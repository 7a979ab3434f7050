-- The paired gate's numbers and the behavioural tests (issue 13).
--
-- Every gate check now carries the rows it was decided on (n), the reference model's value on the same rows,
-- the gain and its confidence interval, the rule and margin, and whether it was decisive; a registered model
-- carries where its per-row test predictions are and the results of its behavioural tests.
ALTER TABLE $database.deployments
    ADD COLUMN IF NOT EXISTS `checks.n` Array(Nullable(Int64)),
    ADD COLUMN IF NOT EXISTS `checks.reference_value` Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS `checks.difference` Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS `checks.ci_low` Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS `checks.ci_high` Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS `checks.confidence` Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS `checks.rule` Array(String),
    ADD COLUMN IF NOT EXISTS `checks.margin` Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS `checks.decisive` Array(Bool);

ALTER TABLE $database.deployment_rejections
    ADD COLUMN IF NOT EXISTS `checks.n` Array(Nullable(Int64)),
    ADD COLUMN IF NOT EXISTS `checks.reference_value` Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS `checks.difference` Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS `checks.ci_low` Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS `checks.ci_high` Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS `checks.confidence` Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS `checks.rule` Array(String),
    ADD COLUMN IF NOT EXISTS `checks.margin` Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS `checks.decisive` Array(Bool);

ALTER TABLE $database.models
    ADD COLUMN IF NOT EXISTS test_predictions_uri Nullable(String),
    ADD COLUMN IF NOT EXISTS `behaviour_tests.name` Array(String),
    ADD COLUMN IF NOT EXISTS `behaviour_tests.kind` Array(String),
    ADD COLUMN IF NOT EXISTS `behaviour_tests.passed` Array(Bool),
    ADD COLUMN IF NOT EXISTS `behaviour_tests.n` Array(Int64),
    ADD COLUMN IF NOT EXISTS `behaviour_tests.value` Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS `behaviour_tests.threshold` Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS `behaviour_tests.detail` Array(String);
