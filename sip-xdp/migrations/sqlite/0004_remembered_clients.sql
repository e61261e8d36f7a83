-- Same table as migrations/mysql/0004_remembered_clients.sql.
CREATE TABLE IF NOT EXISTS remembered_clients (
    ip_address      TEXT NOT NULL PRIMARY KEY,
    how             TEXT NOT NULL,
    first_proven_at TEXT NOT NULL,
    last_proven_at  TEXT NOT NULL,
    node            TEXT NULL DEFAULT NULL
);
CREATE INDEX IF NOT EXISTS remembered_clients_last ON remembered_clients (last_proven_at);
