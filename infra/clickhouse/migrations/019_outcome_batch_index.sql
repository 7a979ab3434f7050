-- The outcome sink reads each batch it has just stored back by its batch_id (the join and the orphan check).
-- `outcomes` is ordered by (model_name, ref), so without an index every such read scanned every outcome ever
-- stored: the cost of a batch grew with the table. A bloom filter per granule lets ClickHouse skip the
-- granules that hold none of the batch (one part right after the insert; mixed ids once parts merge).
ALTER TABLE $database.outcomes ADD INDEX IF NOT EXISTS batch_id_bf batch_id TYPE bloom_filter(0.01) GRANULARITY 1;
