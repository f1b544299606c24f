-- TSBS devops single-groupby-5-1-12: max of 5 metrics per minute, 1 host, 12 hours
SELECT date_bin(INTERVAL '1 minute', time) AS minute,
       max(usage_user) AS max_usage_user, max(usage_system) AS max_usage_system, max(usage_idle) AS max_usage_idle, max(usage_nice) AS max_usage_nice, max(usage_iowait) AS max_usage_iowait
FROM cpu
WHERE hostname IN ('host_3')
  AND time >= '2016-01-01T00:00:00Z' AND time < '2016-01-01T12:00:00Z'
GROUP BY minute
ORDER BY minute;
