"""XEP-0077: registration before authentication, password change and cancellation after."""

from __future__ import annotations

from lxml import etree

from services.features import register
from services.xmpp import forms, ns
from services.xmpp import stanza as st
from services.xmpp.jid import JID
from services.xmpp.sasl import verify_password

from .conftest import HOST, Harness, MakeHarness, assert_error, assert_result, el

R = f"{{{ns.REGISTER}}}"


def iq(type_: str, inner: str = "", to: str | None = HOST, id_: str = "reg1") -> etree._Element:
    e = st.make("iq", type_=type_, id_=id_, to=to)
    e.append(el(f"<query xmlns='{ns.REGISTER}'>{inner}</query>"))
    return e


def creds_inner(user: str, password: str) -> str:
    return f"<username>{user}</username><password>{password}</password>"


async def check_password(h: Harness, user: str, password: str) -> bool:
    ok = True
    for hash_name in ("SHA-1", "SHA-256"):
        c = await h.store.get_credentials(HOST, user, hash_name)
        assert c is not None, hash_name
        ok = ok and verify_password(password, c)
    return ok


# ------------------------------------------------------------------ pre-auth


async def test_preauth_get_fields(h: Harness) -> None:
    reply = await register.preauth(h.router, HOST, iq("get"))
    assert reply.get("type") == "result" and reply.get("id") == "reg1"
    assert reply.get("to") is None
    assert reply.get("from") == HOST
    q = reply[0]
    assert q.tag == R + "query"
    assert q.findtext(R + "instructions") == register.INSTRUCTIONS
    assert q.find(R + "username") is not None and q.find(R + "password") is not None
    form = forms.find_form(q, ns.REGISTER)
    assert form is not None and form.get("type") == "form"
    fields = {f.var: f for f in forms.parse_fields(form)}
    assert fields["username"].required and fields["password"].type == "text-private"


async def test_preauth_get_without_to(h: Harness) -> None:
    reply = await register.preauth(h.router, HOST, iq("get", to=None))
    assert reply.get("type") == "result"
    assert reply.get("from") is None and reply.get("to") is None


async def test_preauth_register(h: Harness) -> None:
    reply = await register.preauth(h.router, HOST, iq("set", creds_inner("Bill", "Calliope")))
    assert reply.get("type") == "result" and len(reply) == 0
    assert await h.store.get_account(HOST, "bill") is not None
    assert await check_password(h, "bill", "Calliope")
    assert not await check_password(h, "bill", "calliope")


async def test_preauth_register_with_form(h: Harness) -> None:
    form = forms.build_form(
        "submit",
        ns.REGISTER,
        [forms.Field("username", values=["juliet"]), forms.Field("password", values=["R0m30"])],
    )
    e = iq("set")
    e[0].append(form)
    reply = await register.preauth(h.router, HOST, e)
    assert reply.get("type") == "result"
    assert await check_password(h, "juliet", "R0m30")


async def test_preauth_malformed_form(h: Harness) -> None:
    e = iq("set")
    e[0].append(el(f"<x xmlns='{ns.DATA_FORMS}' type='bogus'/>"))
    assert_error(await register.preauth(h.router, HOST, e), "bad-request")


async def test_preauth_conflict(h: Harness) -> None:
    await h.account("bill")
    reply = await register.preauth(h.router, HOST, iq("set", creds_inner("bill", "x")))
    assert_error(reply, "conflict", "cancel")
    # case-mapped usernames collide too
    reply = await register.preauth(h.router, HOST, iq("set", creds_inner("BILL", "x")))
    assert_error(reply, "conflict")


async def test_preauth_missing_fields(h: Harness) -> None:
    for inner in (
        "",
        "<username>bill</username>",
        "<password>x</password>",
        "<username>bill</username><password/>",
        "<username/><password>x</password>",
    ):
        reply = await register.preauth(h.router, HOST, iq("set", inner))
        assert_error(reply, "not-acceptable", "modify")
    assert await h.store.get_account(HOST, "bill") is None


async def test_preauth_invalid_username(h: Harness) -> None:
    for bad in ("bad user", "a/b", "a@b", "x&amp;y", "a:b", "\u1100", "\u0378"):
        reply = await register.preauth(h.router, HOST, iq("set", creds_inner(bad, "x")))
        assert_error(reply, "not-acceptable")
    assert await h.store.count_accounts(HOST) == 0


async def test_preauth_bad_password(h: Harness) -> None:
    # the OpaqueString profile (SASLprep's successor) prohibits old Hangul jamo
    reply = await register.preauth(h.router, HOST, iq("set", creds_inner("bill", "a\u1100b")))
    assert_error(reply, "not-acceptable")
    assert await h.store.get_account(HOST, "bill") is None


async def test_preauth_remove_not_authorized(h: Harness) -> None:
    reply = await register.preauth(h.router, HOST, iq("set", "<remove/>"))
    assert_error(reply, "not-authorized", "auth")


async def test_preauth_disabled(make_harness: MakeHarness) -> None:
    h = await make_harness(registration=False)
    assert_error(await register.preauth(h.router, HOST, iq("get")), "service-unavailable", "cancel")
    reply = await register.preauth(h.router, HOST, iq("set", creds_inner("bill", "x")))
    assert_error(reply, "service-unavailable")
    assert await h.store.get_account(HOST, "bill") is None


async def test_preauth_other_payload_and_host(h: Harness) -> None:
    e = st.make("iq", type_="get", id_="v1")
    e.append(el(f"<query xmlns='{ns.VERSION}'/>"))
    assert_error(await register.preauth(h.router, HOST, e), "service-unavailable")
    reply = await register.preauth(h.router, HOST, iq("get", to="elsewhere.org"))
    assert_error(reply, "service-unavailable")
    reply = await register.preauth(h.router, HOST, iq("get", to=f"user@{HOST}"))
    assert_error(reply, "service-unavailable")
    assert_error(await register.preauth(h.router, HOST, iq("result")), "bad-request")
    empty = st.make("iq", type_="get", id_="e1")
    assert_error(await register.preauth(h.router, HOST, empty), "bad-request")


# ----------------------------------------------------------- authenticated


async def test_registered_get(h: Harness) -> None:
    me = await h.login("juliet")
    for to in (HOST, None):
        q = assert_result(await h.iq(me, "get", el(f"<query xmlns='{ns.REGISTER}'/>"), to=to))
        assert q is not None
        assert q.find(R + "registered") is not None
        assert q.findtext(R + "username") == "juliet"


async def test_registered_get_disabled(make_harness: MakeHarness) -> None:
    h = await make_harness(registration=False)
    me = await h.login("juliet")
    reply = await h.iq(me, "get", el(f"<query xmlns='{ns.REGISTER}'/>"), to=HOST)
    assert_error(reply, "service-unavailable")


async def test_change_password(make_harness: MakeHarness) -> None:
    for enabled in (True, False):
        h = await make_harness(registration=enabled)
        me = await h.login("bill")
        q = el(f"<query xmlns='{ns.REGISTER}'>{creds_inner('bill', 'newpass')}</query>")
        assert assert_result(await h.iq(me, "set", q, to=HOST)) is None
        assert await check_password(h, "bill", "newpass")
        # the username may be given as the bare JID, and without a 'to'
        q = el(f"<query xmlns='{ns.REGISTER}'>{creds_inner('bill@example.com', 'other')}</query>")
        assert assert_result(await h.iq(me, "set", q)) is None
        assert await check_password(h, "bill", "other")


async def test_change_password_with_form(h: Harness) -> None:
    me = await h.login("bill")
    q = el(f"<query xmlns='{ns.REGISTER}'/>")
    q.append(
        forms.build_form(
            "submit",
            "jabber:iq:register:changepassword",
            [forms.Field("username", values=["bill"]), forms.Field("password", values=["pw2"])],
        )
    )
    assert assert_result(await h.iq(me, "set", q, to=HOST)) is None
    assert await check_password(h, "bill", "pw2")


async def test_change_password_errors(h: Harness) -> None:
    me = await h.login("bill")
    await h.account("romeo")

    def q(inner: str) -> etree._Element:
        return el(f"<query xmlns='{ns.REGISTER}'>{inner}</query>")

    assert_error(await h.iq(me, "set", q("<password>x</password>"), to=HOST), "bad-request")
    empty = q("<username>bill</username><password/>")
    assert_error(await h.iq(me, "set", empty, to=HOST), "bad-request", "modify")
    assert_error(await h.iq(me, "set", q("<username>bill</username>"), to=HOST), "bad-request")
    assert_error(await h.iq(me, "set", q(""), to=HOST), "bad-request")
    other = q(creds_inner("romeo", "x"))
    assert_error(await h.iq(me, "set", other, to=HOST), "forbidden", "auth")
    # to someone else's account
    mine = q(creds_inner("bill", "x"))
    assert_error(await h.iq(me, "set", mine, to=f"romeo@{HOST}"), "forbidden")
    got = await h.store.get_credentials(HOST, "bill", "SHA-1")
    assert got is not None and got.salt == b"salt"  # unchanged


async def test_nothing_to_do_disabled(make_harness: MakeHarness) -> None:
    h = await make_harness(registration=False)
    me = await h.login("bill")
    reply = await h.iq(me, "set", el(f"<query xmlns='{ns.REGISTER}'/>"), to=HOST)
    assert_error(reply, "service-unavailable")


async def test_cancel(make_harness: MakeHarness) -> None:
    for enabled in (True, False):
        h = await make_harness(registration=enabled)
        me = await h.login(f"bill@{HOST}/globe")
        other = await h.login(f"bill@{HOST}/phone")
        await h.store.add_blocks(HOST, "bill", ["iago@example.com"])
        iq_id = await h.send_iq(me, "set", el(f"<query xmlns='{ns.REGISTER}'><remove/></query>"))
        reply = h.reply(me, iq_id)
        assert assert_result(reply) is None
        assert reply.get("to") == str(me)
        assert await h.store.get_account(HOST, "bill") is None
        assert await h.store.get_blocklist(HOST, "bill") == []
        assert sorted(h.edge.closed, key=str) == sorted(
            [
                (me, "not-authorized", "account removed"),
                (other, "not-authorized", "account removed"),
            ],
            key=str,
        )


async def test_cancel_to_server(h: Harness) -> None:
    me = await h.login("bill")
    reply = await h.iq(me, "set", el(f"<query xmlns='{ns.REGISTER}'><remove/></query>"), to=HOST)
    assert assert_result(reply) is None
    assert await h.store.get_account(HOST, "bill") is None
    assert h.edge.closed == [(me, "not-authorized", "account removed")]


async def test_cancel_with_siblings(h: Harness) -> None:
    me = await h.login("bill")
    q = el(f"<query xmlns='{ns.REGISTER}'><remove/><username>bill</username></query>")
    assert_error(await h.iq(me, "set", q, to=HOST), "bad-request")
    assert await h.store.get_account(HOST, "bill") is not None
    assert h.edge.closed == []


async def test_cancel_someone_else(h: Harness) -> None:
    me = await h.login("bill")
    await h.account("romeo")
    q = el(f"<query xmlns='{ns.REGISTER}'><remove/></query>")
    assert_error(await h.iq(me, "set", q, to=f"romeo@{HOST}"), "forbidden")
    assert await h.store.get_account(HOST, "romeo") is not None


async def test_cancel_unknown_account(h: Harness) -> None:
    me = await h.login("ghost", create=False)
    q = el(f"<query xmlns='{ns.REGISTER}'><remove/></query>")
    assert_error(await h.iq(me, "set", q, to=HOST), "registration-required", "auth")
    assert JID.parse(f"ghost@{HOST}") == me.bare
