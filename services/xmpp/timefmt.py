"""XEP-0082 date/time profiles and XEP-0203 delayed delivery."""

from __future__ import annotations

import datetime

from lxml import etree

from . import ns


def datetime_str(stamp: float, millis: bool = False) -> str:
    """XEP-0082 DateTime in UTC. Fractions are optional in the profile and
    some clients (slixmpp among them) fail on them, so they are opt-in."""
    dt = datetime.datetime.fromtimestamp(stamp, datetime.UTC)
    if millis:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(s: str) -> float:
    """Parse a XEP-0082 DateTime (with Z or an offset) to a POSIX timestamp."""
    s = s.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    dt = datetime.datetime.fromisoformat(s)
    if dt.tzinfo is None:
        raise ValueError("XEP-0082 DateTime needs a time zone")
    return dt.timestamp()


def tzo_str(offset_seconds: int) -> str:
    sign = "+" if offset_seconds >= 0 else "-"
    offset_seconds = abs(offset_seconds)
    return f"{sign}{offset_seconds // 3600:02d}:{offset_seconds % 3600 // 60:02d}"


def delay_element(stamp: float, frm: str, reason: str | None = None) -> etree._Element:
    el = etree.Element(ns.q(ns.DELAY, "delay"), nsmap={None: ns.DELAY})
    el.set("from", frm)
    el.set("stamp", datetime_str(stamp))
    if reason:
        el.text = reason
    return el
