-- Views for the operator's own SQL and dashboards (Grafana's MySQL data
-- source): events per hour, the most banned sources, registration failures
-- per user. Times are the database's own, like the tables'.
CREATE OR REPLACE VIEW security_stats_hourly AS
SELECT DATE_FORMAT(event_time, '%Y-%m-%d %H:00:00') AS hour,
       event_type,
       severity,
       COUNT(*) AS events,
       COUNT(DISTINCT source_ip) AS sources
FROM security_events
GROUP BY DATE_FORMAT(event_time, '%Y-%m-%d %H:00:00'), event_type, severity;

CREATE OR REPLACE VIEW top_attacking_ips AS
SELECT ip_address,
       COUNT(*) AS bans,
       GROUP_CONCAT(DISTINCT source ORDER BY source SEPARATOR ',') AS reasons,
       MIN(blocked_at) AS first_blocked,
       MAX(blocked_at) AS last_blocked,
       SUM(unblocked_at IS NULL AND (expires_at IS NULL OR expires_at > NOW())) AS active
FROM blocked_ips
GROUP BY ip_address;

CREATE OR REPLACE VIEW registration_failure_stats AS
SELECT username,
       domain,
       COUNT(*) AS attempts,
       COUNT(DISTINCT source_ip) AS sources,
       MIN(attempt_time) AS first_attempt,
       MAX(attempt_time) AS last_attempt
FROM failed_registrations
GROUP BY username, domain;
