-- TSBS devops groupby-orderby-limit: the last 5 minutes before a time, max of 1 metric
SELECT date_bin(INTERVAL '1 minute', time) AS minute,
       max(usage_user) AS max_usage_user
FROM cpu
WHERE time < '2016-01-01T06:13:24Z'
GROUP BY minute
ORDER BY minute DESC
LIMIT 5;
