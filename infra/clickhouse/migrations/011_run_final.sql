-- TrainingRunUpdated v2's `final`: false only on a failed attempt whose event is retried, so SQL tells a run
-- that gave up from one that is still being tried without parsing failure_reason. Rows written before v2 read
-- as final, as old events do in Avro.
ALTER TABLE $database.training_runs ADD COLUMN IF NOT EXISTS final Bool DEFAULT true AFTER request_id;
