-- Push registrations (XEP-0357): where a user's XMPP server publishes push
-- notifications. One row per (app server JID, node) of a user, so enabling
-- the same pair again replaces its publish options (section 5); ``options``
-- is the publish-options data form as the client sent it, serialized (NULL:
-- none). ``created`` orders a user's registrations, oldest first. Per-user
-- like the tables of 0001: Store.delete_account deletes them with the account.
CREATE TABLE push_registrations (
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    jid TEXT NOT NULL,
    node TEXT NOT NULL,
    options BYTEA,
    created DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (host, username, jid, node),
    FOREIGN KEY (host, username) REFERENCES accounts (host, username) ON DELETE CASCADE
);
