-- What the SIP server records about failed attempts; sip-xdp reads both
-- tables for brute-force detection (like fail2ban reads a log). The
-- columns of failed_registrations are the ones OpenSIPS scripts write.
-- Created only if missing: an existing table is left as it is.
CREATE TABLE IF NOT EXISTS failed_registrations (
    id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username        VARCHAR(64)  NOT NULL DEFAULT '',
    domain          VARCHAR(128) NOT NULL DEFAULT '',
    source_ip       VARCHAR(64)  NOT NULL,
    source_port     INT          NULL DEFAULT NULL,
    user_agent      VARCHAR(255) NOT NULL DEFAULT '',
    response_code   INT          NULL DEFAULT NULL,
    response_reason VARCHAR(64)  NOT NULL DEFAULT '',
    attempt_time    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    expires_header  INT          NULL DEFAULT NULL,
    KEY failed_registrations_time (attempt_time),
    KEY failed_registrations_ip (source_ip)
);

-- Requests to unknown users or from unknown peers (the SIP server's
-- "who is knocking" log): INVITEs to non-existent extensions, calls from
-- unprovisioned IPs.
CREATE TABLE IF NOT EXISTS door_knock_attempts (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    source_ip     VARCHAR(64)  NOT NULL,
    source_port   INT          NULL DEFAULT NULL,
    username      VARCHAR(64)  NOT NULL DEFAULT '',
    domain        VARCHAR(128) NOT NULL DEFAULT '',
    method        VARCHAR(16)  NOT NULL DEFAULT '',
    user_agent    VARCHAR(255) NOT NULL DEFAULT '',
    response_code INT          NULL DEFAULT NULL,
    reason        VARCHAR(255) NOT NULL DEFAULT '',
    attempt_time  DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    KEY door_knock_attempts_time (attempt_time),
    KEY door_knock_attempts_ip (source_ip)
);
