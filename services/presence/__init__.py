"""Presence and subscriptions (RFC 6121 sections 3 and 4), roster pushes."""

from .service import PresenceService

__all__ = ["PresenceService"]
