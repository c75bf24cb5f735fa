"""xmppd: an XMPP server that runs embedded or as a cluster of services."""
