-- Offline messages get a key chosen by the caller (OfflineStore: a UUID), so
-- storing one again, as a control-plane retry does after a timeout, keeps one
-- row (Store.store_offline: ON CONFLICT DO NOTHING). Rows stored before this
-- migration have no key; NULLs never collide in a unique index.
ALTER TABLE offline_messages ADD COLUMN msg_key TEXT;

CREATE UNIQUE INDEX offline_messages_key ON offline_messages (host, username, msg_key);
