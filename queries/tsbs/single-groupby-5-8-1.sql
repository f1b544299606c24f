-- TSBS devops single-groupby-5-8-1: max of 5 metrics per minute, 8 hosts, 1 hour
SELECT date_bin(INTERVAL '1 minute', time) AS minute,
       max(usage_user) AS max_usage_user, max(usage_system) AS max_usage_system, max(usage_idle) AS max_usage_idle, max(usage_nice) AS max_usage_nice, max(usage_iowait) AS max_usage_iowait
FROM cpu
WHERE hostname IN ('host_3', 'host_7', 'host_1', 'host_5', 'host_0', 'host_6', 'host_2', 'host_4')
  AND time >= '2016-01-01T03:21:40Z' AND time < '2016-01-01T04:21:40Z'
GROUP BY minute
ORDER BY minute;
