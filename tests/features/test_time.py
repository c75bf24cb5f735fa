from __future__ import annotations

import re
import time

from services.features.time import time_element
from services.xmpp import ns
from services.xmpp.timefmt import parse_datetime

from .conftest import HOST, Harness, assert_result, el

T = f"{{{ns.TIME}}}"
TZO = re.compile(r"^[+-]\d\d:\d\d$")
UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def test_time(h: Harness) -> None:
    me = await h.login("juliet")
    before = time.time()
    q = assert_result(await h.iq(me, "get", el(f"<time xmlns='{ns.TIME}'/>"), to=HOST))
    after = time.time()
    assert q is not None and q.tag == T + "time"
    tzo, utc = q.findtext(T + "tzo"), q.findtext(T + "utc")
    assert tzo is not None and TZO.match(tzo)
    assert utc is not None and UTC.match(utc)
    assert int(before) <= parse_datetime(utc) <= after + 0.01  # whole seconds on the wire


def test_time_element_fixed_instant() -> None:
    e = time_element(0.0)
    assert e.findtext(T + "utc") == "1970-01-01T00:00:00Z"
    offset = time.localtime(0.0).tm_gmtoff
    sign = "+" if offset >= 0 else "-"
    o = abs(offset)
    assert e.findtext(T + "tzo") == f"{sign}{o // 3600:02d}:{o % 3600 // 60:02d}"
