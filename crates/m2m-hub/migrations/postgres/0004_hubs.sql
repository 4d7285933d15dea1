-- Hub instances (issue 20): one row per running hub on this database. `id` is the hub's
-- instance id (the `hub` column of the agents it holds), `url` its public WebSocket URL,
-- times are milliseconds since the epoch. A hub writes its row at start, moves `alive_at`
-- every few seconds and deletes it at a clean shutdown; when a row's `alive_at` is older
-- than the liveness expiry, any other hub marks that hub's agents offline and deletes it.
CREATE TABLE IF NOT EXISTS m2m_hubs (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    alive_at   BIGINT NOT NULL
);
