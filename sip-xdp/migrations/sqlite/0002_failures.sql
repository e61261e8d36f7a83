-- Same tables as migrations/mysql/0002_failures.sql.
CREATE TABLE IF NOT EXISTS failed_registrations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    username        TEXT NOT NULL DEFAULT '',
    domain          TEXT NOT NULL DEFAULT '',
    source_ip       TEXT NOT NULL,
    source_port     INTEGER NULL DEFAULT NULL,
    user_agent      TEXT NOT NULL DEFAULT '',
    response_code   INTEGER NULL DEFAULT NULL,
    response_reason TEXT NOT NULL DEFAULT '',
    attempt_time    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    expires_header  INTEGER NULL DEFAULT NULL
);
CREATE INDEX IF NOT EXISTS failed_registrations_time ON failed_registrations (attempt_time);

CREATE TABLE IF NOT EXISTS door_knock_attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    source_ip     TEXT NOT NULL,
    source_port   INTEGER NULL DEFAULT NULL,
    username      TEXT NOT NULL DEFAULT '',
    domain        TEXT NOT NULL DEFAULT '',
    method        TEXT NOT NULL DEFAULT '',
    user_agent    TEXT NOT NULL DEFAULT '',
    response_code INTEGER NULL DEFAULT NULL,
    reason        TEXT NOT NULL DEFAULT '',
    attempt_time  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
CREATE INDEX IF NOT EXISTS door_knock_attempts_time ON door_knock_attempts (attempt_time);
