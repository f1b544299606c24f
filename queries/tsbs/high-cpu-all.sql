-- TSBS devops high-cpu-all: readings of every host with usage_user above 90, 12 hours
SELECT *
FROM cpu
WHERE usage_user > 90
  AND time >= '2016-01-01T00:00:00Z' AND time < '2016-01-01T12:00:00Z'
ORDER BY time, hostname;
