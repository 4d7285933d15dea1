-- The registry of agents, shared by every hub on this database. Times are milliseconds
-- since the epoch; capabilities and metadata are JSON text. Every write takes a new
-- `version` from the sequence: hubs read the change feed `version > watermark` to see
-- what other hubs did. `hub` is the instance id of the hub holding the WebSocket.
CREATE SEQUENCE IF NOT EXISTS m2m_agents_version_seq;
CREATE TABLE IF NOT EXISTS m2m_agents (
    id           TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    capabilities TEXT NOT NULL DEFAULT '[]',
    metadata     TEXT NOT NULL DEFAULT '{}',
    identity     TEXT,
    status       TEXT NOT NULL,
    last_seen    BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    hub          TEXT NOT NULL DEFAULT '',
    version      BIGINT NOT NULL DEFAULT nextval('m2m_agents_version_seq')
);
CREATE INDEX IF NOT EXISTS m2m_agents_version ON m2m_agents (version);
CREATE INDEX IF NOT EXISTS m2m_agents_status_seen ON m2m_agents (status, last_seen);
CREATE INDEX IF NOT EXISTS m2m_agents_hub_live ON m2m_agents (hub) WHERE status <> 'offline';
