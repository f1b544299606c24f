-- TSBS devops cpu-max-all-8: max of all 10 metrics per hour, 8 hosts, 8 hours
SELECT date_bin(INTERVAL '1 hour', time) AS hour,
       max(usage_user) AS max_usage_user, max(usage_system) AS max_usage_system, max(usage_idle) AS max_usage_idle, max(usage_nice) AS max_usage_nice, max(usage_iowait) AS max_usage_iowait, max(usage_irq) AS max_usage_irq, max(usage_softirq) AS max_usage_softirq, max(usage_steal) AS max_usage_steal, max(usage_guest) AS max_usage_guest, max(usage_guest_nice) AS max_usage_guest_nice
FROM cpu
WHERE hostname IN ('host_3', 'host_7', 'host_1', 'host_5', 'host_0', 'host_6', 'host_2', 'host_4')
  AND time >= '2016-01-01T02:00:00Z' AND time < '2016-01-01T10:00:00Z'
GROUP BY hour
ORDER BY hour;
