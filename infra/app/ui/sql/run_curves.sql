-- Per-epoch updates of the runs in {ids}: the learning curves.
SELECT run_id, epoch, metrics
FROM training_runs FINAL
WHERE has({ids:Array(String)}, run_id) AND epoch IS NOT NULL
ORDER BY run_id, epoch, event_time
LIMIT 1 BY run_id, epoch
