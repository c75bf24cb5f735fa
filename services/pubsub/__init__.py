"""Publish-subscribe (XEP-0060) and PEP (XEP-0163): the sans-IO core."""
