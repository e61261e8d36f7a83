-- Same views as migrations/mysql/0003_report_views.sql.
CREATE VIEW IF NOT EXISTS security_stats_hourly AS
SELECT strftime('%Y-%m-%d %H:00:00', event_time) AS hour,
       event_type,
       severity,
       COUNT(*) AS events,
       COUNT(DISTINCT source_ip) AS sources
FROM security_events
GROUP BY 1, 2, 3;

CREATE VIEW IF NOT EXISTS top_attacking_ips AS
SELECT ip_address,
       COUNT(*) AS bans,
       group_concat(DISTINCT source) AS reasons,
       MIN(blocked_at) AS first_blocked,
       MAX(blocked_at) AS last_blocked,
       SUM(unblocked_at IS NULL AND (expires_at IS NULL OR julianday(expires_at) > julianday('now'))) AS active
FROM blocked_ips
GROUP BY ip_address;

CREATE VIEW IF NOT EXISTS registration_failure_stats AS
SELECT username,
       domain,
       COUNT(*) AS attempts,
       COUNT(DISTINCT source_ip) AS sources,
       MIN(attempt_time) AS first_attempt,
       MAX(attempt_time) AS last_attempt
FROM failed_registrations
GROUP BY username, domain;
