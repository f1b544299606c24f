-- TSBS devops lastpoint: the last reading of every host
SELECT DISTINCT ON (hostname) *
FROM cpu
ORDER BY hostname, time DESC;
