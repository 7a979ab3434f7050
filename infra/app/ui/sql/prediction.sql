-- A served request by its id: which model version answered it, when, and what it predicted.
SELECT request_id, model_name, model_version, event_time, latency_us, batch_size, prediction, confidence, status,
       error, event_id
FROM inference_telemetry FINAL
WHERE request_id = {request_id:String}
ORDER BY event_time DESC
LIMIT 10
