"""Entity time (XEP-0202) of the server, in the XEP-0082 profiles.

``<tzo/>`` is the offset of the host's local time zone (``+00:00`` on a host
in UTC); ``<utc/>`` is the current time in UTC with milliseconds.
"""

from __future__ import annotations

import time as _time

from lxml import etree

from ..core.feature import Context, Feature
from ..core.routing import Envelope
from ..xmpp import ns
from ..xmpp.timefmt import datetime_str, tzo_str

__all__ = ["FEATURE", "time_element"]

_TIME = ns.q(ns.TIME, "time")


def time_element(now: float | None = None) -> etree._Element:
    """``<time xmlns='urn:xmpp:time'><tzo/><utc/></time>`` for ``now``."""
    if now is None:
        now = _time.time()
    el = etree.Element(_TIME, nsmap={None: ns.TIME})
    etree.SubElement(el, ns.q(ns.TIME, "tzo")).text = tzo_str(_time.localtime(now).tm_gmtoff)
    etree.SubElement(el, ns.q(ns.TIME, "utc")).text = datetime_str(now)
    return el


async def _entity_time(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element:
    return time_element()


FEATURE = Feature(
    name="time",
    xeps=("XEP-0202", "XEP-0082"),
    disco_features=(ns.TIME,),
    server_iq={(_TIME, "get"): _entity_time},
)
