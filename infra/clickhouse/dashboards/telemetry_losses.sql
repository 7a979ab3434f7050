-- Telemetry events lost per minute since {since}, by emitting process ({model} '' means every model): dropped in the model server (buffer full) or never acknowledged by Kafka; requests in the same minutes are missing this many rows.
SELECT
    minute,
    process,
    sum(dropped) AS dropped,
    sum(failed)  AS failed
FROM telemetry_losses
WHERE ({model:String} = '' OR model_name = {model:String})
  AND minute >= toStartOfMinute({since:DateTime64(6)})
GROUP BY minute, process
ORDER BY minute, process
