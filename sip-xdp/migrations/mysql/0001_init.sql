-- Table and column names are the ones operators' scripts (and OpenSIPS
-- deployments) already query. Every column a human or another tool writes
-- has a default, so INSERT INTO blocked_ips (ip_address, reason) VALUES
-- ('203.0.113.7', 'manual') is a complete, permanent block. Times are UTC.
CREATE TABLE IF NOT EXISTS blocked_ips (
    id           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    ip_address   VARCHAR(64)  NOT NULL,
    reason       VARCHAR(255) NOT NULL DEFAULT '',
    source       VARCHAR(32)  NOT NULL DEFAULT 'manual',
    blocked_at   DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    expires_at   DATETIME(3)  NULL DEFAULT NULL,
    unblocked_at DATETIME(3)  NULL DEFAULT NULL,
    node         VARCHAR(64)  NULL DEFAULT NULL,
    KEY blocked_ips_active (unblocked_at, expires_at),
    KEY blocked_ips_ip (ip_address)
);

CREATE TABLE IF NOT EXISTS whitelisted_ips (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    ip_address  VARCHAR(64)  NOT NULL,
    comment     VARCHAR(255) NOT NULL DEFAULT '',
    created_at  DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    KEY whitelisted_ips_ip (ip_address)
);

CREATE TABLE IF NOT EXISTS security_events (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_type  VARCHAR(64)  NOT NULL,
    source_ip   VARCHAR(64)  NULL DEFAULT NULL,
    severity    VARCHAR(16)  NOT NULL DEFAULT 'info',
    details     TEXT         NULL,
    event_time  DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    node        VARCHAR(64)  NULL DEFAULT NULL,
    KEY security_events_time (event_time),
    KEY security_events_type (event_type, event_time)
);
