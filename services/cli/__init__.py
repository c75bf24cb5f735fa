"""``xmppctl``: the operator's command line."""
