-- The memory of good clients: addresses that proved they own their
-- address by a round trip with an SBC (a challenged REGISTER answered with
-- a 2xx, an answer to the SBC's own request), shared by every node and
-- loaded at start, so that in overload a phone whose trust lapsed overnight
-- is admitted before strangers.
CREATE TABLE IF NOT EXISTS remembered_clients (
    ip_address      VARCHAR(45) NOT NULL PRIMARY KEY,
    how             VARCHAR(16) NOT NULL,
    first_proven_at DATETIME    NOT NULL,
    last_proven_at  DATETIME    NOT NULL,
    node            VARCHAR(64) NULL DEFAULT NULL,
    KEY remembered_clients_last (last_proven_at)
);
