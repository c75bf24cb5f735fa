from __future__ import annotations

from services.features import version
from services.xmpp import ns

from .conftest import HOST, MakeHarness, assert_error, assert_result, el

V = f"{{{ns.VERSION}}}"


async def test_version(make_harness: MakeHarness) -> None:
    h = await make_harness(server_name="xmppd-test")
    me = await h.login("juliet")
    reply = await h.iq(me, "get", el(f"<query xmlns='{ns.VERSION}'/>"), to=HOST)
    q = assert_result(reply)
    assert q is not None and q.tag == V + "query"
    assert q.findtext(V + "name") == "xmppd-test"
    assert q.findtext(V + "version") == version.software_version()
    assert q.find(V + "os") is None


def test_software_version_is_a_version() -> None:
    v = version.software_version()
    assert v and v[0].isdigit()


async def test_version_set_is_not_handled(make_harness: MakeHarness) -> None:
    h = await make_harness()
    me = await h.login("juliet")
    reply = await h.iq(me, "set", el(f"<query xmlns='{ns.VERSION}'/>"), to=HOST)
    assert_error(reply, "service-unavailable")
