-- Versions that answered traffic since {since}, and whether each is the currently deployed one.
SELECT
    t.model_name                                  AS model_name,
    t.model_version                               AS model_version,
    t.requests                                    AS requests,
    t.last_minute                                 AS last_minute,
    d.deployed_version                            AS deployed_version,
    t.model_version = d.deployed_version          AS is_deployed
FROM
(
    SELECT model_name, model_version, sum(requests) AS requests, max(minute) AS last_minute
    FROM telemetry_minute
    WHERE ({model:String} = '' OR model_name = {model:String})
      AND minute >= toStartOfMinute({since:DateTime64(6)})
    GROUP BY model_name, model_version
) AS t
LEFT JOIN
(
    SELECT model_name, argMax(model_version, event_time) AS deployed_version
    FROM deployments FINAL
    GROUP BY model_name
) AS d ON d.model_name = t.model_name
ORDER BY model_name, model_version
