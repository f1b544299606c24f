-- TSBS devops double-groupby-all: mean of all 10 metrics per host per hour, all hosts, 12 hours
SELECT date_bin(INTERVAL '1 hour', time) AS hour, hostname,
       avg(usage_user) AS mean_usage_user, avg(usage_system) AS mean_usage_system, avg(usage_idle) AS mean_usage_idle, avg(usage_nice) AS mean_usage_nice, avg(usage_iowait) AS mean_usage_iowait, avg(usage_irq) AS mean_usage_irq, avg(usage_softirq) AS mean_usage_softirq, avg(usage_steal) AS mean_usage_steal, avg(usage_guest) AS mean_usage_guest, avg(usage_guest_nice) AS mean_usage_guest_nice
FROM cpu
WHERE time >= '2016-01-01T00:00:00Z' AND time < '2016-01-01T12:00:00Z'
GROUP BY hour, hostname
ORDER BY hour, hostname;
