-- The registry of agents. Times are milliseconds since the epoch; capabilities and
-- metadata are JSON text. `version` orders changes (the hub assigns it; one writer).
-- `hub` is the instance id of the hub holding the agent's WebSocket.
CREATE TABLE IF NOT EXISTS m2m_agents (
    id           TEXT PRIMARY KEY NOT NULL,
    address      TEXT NOT NULL,
    capabilities TEXT NOT NULL DEFAULT '[]',
    metadata     TEXT NOT NULL DEFAULT '{}',
    identity     TEXT,
    status       TEXT NOT NULL,
    last_seen    INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    hub          TEXT NOT NULL DEFAULT '',
    version      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS m2m_agents_status_seen ON m2m_agents (status, last_seen);
