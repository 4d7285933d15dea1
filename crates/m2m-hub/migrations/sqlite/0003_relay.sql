-- Relay (docs/RELAY.md "Records"): the public WebSocket URL of the hub an agent is attached
-- to (cleared when it goes offline), and the reachability probe's result.
ALTER TABLE m2m_agents ADD COLUMN relay TEXT;
ALTER TABLE m2m_agents ADD COLUMN reachable TEXT;
