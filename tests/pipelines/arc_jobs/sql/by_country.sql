-- SQL read from a file (inputURI): a sqlParams placeholder and a job variable.
SELECT country, COUNT(*) AS people, SUM(balance) AS balance
FROM ${people}
WHERE joined >= DATE '${ETL_CONF_SINCE}'
GROUP BY country
