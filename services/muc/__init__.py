"""Multi-user chat (XEP-0045): the sans-IO room and the service of a domain."""
