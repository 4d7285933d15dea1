-- Relay (docs/RELAY.md "Records"): the public WebSocket URL of the hub an agent is attached
-- to (cleared when it goes offline), and the reachability probe's result. Nullable, so
-- every hub on the database (and one that does not know the columns) keeps working.
ALTER TABLE m2m_agents ADD COLUMN IF NOT EXISTS relay TEXT;
ALTER TABLE m2m_agents ADD COLUMN IF NOT EXISTS reachable TEXT;
