-- 2.1: a registration token per `register`. A 2.1 id is the same on every reconnect (on
-- any hub of this database), so the row outlives the WebSocket that wrote it; every write
-- made on behalf of a WebSocket (heartbeat back to online, status, disconnect, the close)
-- is conditional on this token, so the WebSocket an agent left behind — on this hub or on
-- another — can never change the newer registration's row.
ALTER TABLE m2m_agents ADD COLUMN IF NOT EXISTS session TEXT NOT NULL DEFAULT '';
