-- TSBS devops double-groupby-1: mean of 1 metric per host per hour, all hosts, 12 hours
SELECT date_bin(INTERVAL '1 hour', time) AS hour, hostname,
       avg(usage_user) AS mean_usage_user
FROM cpu
WHERE time >= '2016-01-01T00:00:00Z' AND time < '2016-01-01T12:00:00Z'
GROUP BY hour, hostname
ORDER BY hour, hostname;
