-- Names of every registered model, for the model filter's suggestions.
SELECT DISTINCT model_name FROM models ORDER BY model_name LIMIT 1000
