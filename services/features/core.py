"""Declarations of what the edge, router and presence services implement
without IQ handlers of their own, so the feature list and disco#info tell
the whole truth (the behaviour lives in those services)."""

from __future__ import annotations

from ..xmpp import ns
from .base import Feature

FEATURE = Feature(
    name="core",
    xeps=(
        "RFC 6120",
        "RFC 7622",
        "XEP-0160",  # router/offline.py
        "XEP-0203",  # delay stamps on offline delivery
        "XEP-0256",  # last activity on probe replies (presence service)
        "XEP-0368",  # direct TLS listener (edge)
    ),
    disco_features=(ns.OFFLINE,),
)
