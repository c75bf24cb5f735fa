-- Who has a JID in their roster: a login answers its contacts' presence
-- probes with one query over this (Store.roster_entries_for) instead of one
-- roster lookup per contact.
CREATE INDEX roster_items_by_jid ON roster_items (jid);
