-- Same tables and defaults as migrations/mysql. Times are UTC text
-- 'YYYY-MM-DD HH:MM:SS.SSS', which compares correctly as text.
CREATE TABLE IF NOT EXISTS blocked_ips (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    ip_address   TEXT NOT NULL,
    reason       TEXT NOT NULL DEFAULT '',
    source       TEXT NOT NULL DEFAULT 'manual',
    blocked_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    expires_at   TEXT NULL DEFAULT NULL,
    unblocked_at TEXT NULL DEFAULT NULL,
    node         TEXT NULL DEFAULT NULL
);
CREATE INDEX IF NOT EXISTS blocked_ips_active ON blocked_ips (unblocked_at, expires_at);
CREATE INDEX IF NOT EXISTS blocked_ips_ip ON blocked_ips (ip_address);

CREATE TABLE IF NOT EXISTS whitelisted_ips (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ip_address  TEXT NOT NULL,
    comment     TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
CREATE INDEX IF NOT EXISTS whitelisted_ips_ip ON whitelisted_ips (ip_address);

CREATE TABLE IF NOT EXISTS security_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type  TEXT NOT NULL,
    source_ip   TEXT NULL DEFAULT NULL,
    severity    TEXT NOT NULL DEFAULT 'info',
    details     TEXT NULL,
    event_time  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    node        TEXT NULL DEFAULT NULL
);
CREATE INDEX IF NOT EXISTS security_events_time ON security_events (event_time);
CREATE INDEX IF NOT EXISTS security_events_type ON security_events (event_type, event_time);
