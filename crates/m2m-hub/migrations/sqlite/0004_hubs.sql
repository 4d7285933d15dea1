-- Hub instances (issue 20): the row of the hub using this file (and, after a crash, of the
-- one before it, deleted by the next hub's expiry check). `id` is the hub's instance id (the
-- `hub` column of its agents), `url` its public WebSocket URL, times in ms since the epoch.
CREATE TABLE IF NOT EXISTS m2m_hubs (
    id         TEXT PRIMARY KEY NOT NULL,
    url        TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    alive_at   INTEGER NOT NULL
);
