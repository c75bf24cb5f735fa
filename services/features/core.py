"""Declarations of what the edge, router and presence services implement
without IQ handlers of their own, so the feature list and disco#info tell
the whole truth (the behaviour lives in those services)."""

from __future__ import annotations

from ..core.feature import Feature

FEATURE = Feature(
    name="core",
    xeps=(
        "RFC 6120",
        "RFC 7622",
        "XEP-0256",  # last activity on probe replies (presence service)
        "XEP-0368",  # direct TLS listener (edge)
    ),
)
