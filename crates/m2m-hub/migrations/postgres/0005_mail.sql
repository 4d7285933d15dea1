-- Mailbox (docs/MAILBOX.md): the agent's signed mailbox key (JSON text of
-- m2m_proto::mailbox::MailboxKey, as registered), and the stored mail. Nullable and new
-- tables only, so hubs that do not know them keep working on the same database.
ALTER TABLE m2m_agents ADD COLUMN IF NOT EXISTS mailbox TEXT;
-- One sealed message: opaque bytes the hub neither opens nor changes. `seq` orders a
-- recipient's mail (oldest first).
CREATE TABLE IF NOT EXISTS m2m_mail (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient  TEXT NOT NULL,
    id         TEXT NOT NULL,
    sender     TEXT NOT NULL,
    sealed     BYTEA NOT NULL,
    stored_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    UNIQUE (recipient, id)
);
CREATE INDEX IF NOT EXISTS m2m_mail_recipient_seq ON m2m_mail (recipient, seq);
CREATE INDEX IF NOT EXISTS m2m_mail_expires ON m2m_mail (expires_at);
-- What is stored now, per recipient ('r:<id>'), per sender ('s:<id>') and in total ('*'):
-- the quotas are conditional updates of these rows in the storing transaction, so every
-- hub on the database shares them.
CREATE TABLE IF NOT EXISTS m2m_mail_usage (
    key      TEXT PRIMARY KEY NOT NULL,
    messages BIGINT NOT NULL DEFAULT 0,
    bytes    BIGINT NOT NULL DEFAULT 0
);
-- The newest subscription of each recipient (a newer one, on any hub, takes over).
CREATE TABLE IF NOT EXISTS m2m_mail_leases (
    recipient TEXT PRIMARY KEY NOT NULL,
    hub       TEXT NOT NULL,
    token     TEXT NOT NULL
);
