"""RFC 6120 stream behaviour over raw sockets: headers, TLS, SASL, binding,
and every stream error condition the server emits."""

from __future__ import annotations

import asyncio
import base64
import re
import xml.etree.ElementTree as ET

import pytest

from ..conftest import PASSWORD, Raw, session_count, shutdown

STREAM_ERR = r"<stream:error><{cond} xmlns=['\"]urn:ietf:params:xml:ns:xmpp-streams['\"]"


async def expect_stream_error(r: Raw, cond: str) -> None:
    await r.expect(STREAM_ERR.format(cond=cond))
    rest = await r.closed()
    # RFC 6120 4.9.1.1: the error is followed by the closing tag, then the close
    assert rest.endswith(b"</stream:error></stream:stream>"), rest


async def test_features_before_tls_offer_only_starttls(raw):
    r = await raw()
    r.header()
    feats = await r.expect(b"</stream:features>")
    assert b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>" in feats
    assert b"mechanisms" not in feats
    assert b"from='localhost'" in feats and b"version='1.0'" in feats


async def test_features_after_tls_offer_scram_and_plus(raw):
    r = await raw()
    await r.starttls()
    r.header()
    feats = await r.expect(b"</stream:features>")
    for mech in (
        b"SCRAM-SHA-256-PLUS",
        b"SCRAM-SHA-1-PLUS",
        b"SCRAM-SHA-256",
        b"SCRAM-SHA-1",
        b"PLAIN",
    ):
        assert b"<mechanism>" + mech + b"</mechanism>" in feats
    assert b"starttls" not in feats


async def test_direct_tls_offers_mechanisms_immediately(raw):
    r = await raw(tls=True)
    r.header()
    feats = await r.expect(b"</stream:features>")
    assert b"SCRAM-SHA-256" in feats and b"starttls" not in feats


@pytest.mark.parametrize(
    ("header", "cond"),
    [
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            "to='example.org' version='1.0'>",
            "host-unknown",
        ),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            "version='1.0'>",
            "host-unknown",
        ),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='localhost' version='1.0'>",
            "invalid-namespace",
        ),
        (
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
            "to='localhost' version='1.0'>",
            "invalid-namespace",
        ),
        (
            "<foo:stream xmlns='jabber:client' xmlns:foo='http://etherx.jabber.org/streams' "
            "to='localhost' version='1.0'>",
            "bad-namespace-prefix",
        ),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            "to='localhost' version='2.0'>",
            "unsupported-version",
        ),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            "to='localhost'>",
            "unsupported-version",
        ),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            "to='localhost' version='one'>",
            "bad-format",
        ),
        (
            "<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
            "unsupported-encoding",
        ),
        (
            "<!DOCTYPE stream:stream><stream:stream xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
            "restricted-xml",
        ),
        (
            "<?xml version='1.0'?><!-- hi --><stream:stream xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
            "restricted-xml",
        ),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            "to='localhost' version='1.0'><<<",
            "not-well-formed",
        ),
    ],
)
async def test_header_errors(raw, header, cond):
    r = await raw()
    r.send(header)
    out = await r.expect(STREAM_ERR.format(cond=cond))
    # RFC 6120 4.9.1.1: the server opens its own stream before the error
    assert out.startswith(b"<?xml version='1.0'?><stream:stream")
    rest = await r.closed()
    assert b"</stream:stream>" in out + rest + r.buf


@pytest.mark.parametrize(
    ("payload", "cond"),
    [
        (b"<!-- a comment -->", "restricted-xml"),
        (b"<?proc instruction?>", "restricted-xml"),
        (b"<message>&ent;</message>", "restricted-xml"),
        (b"<message><body></message>", "not-well-formed"),
        (b"<foo:bar/>", "bad-namespace-prefix"),
        (b"\x00", "not-well-formed"),
    ],
)
async def test_restricted_and_malformed_after_login(raw, payload, cond):
    r = await raw()
    await r.login()
    r.send(payload)
    await expect_stream_error(r, cond)


async def test_entity_split_across_packets_is_still_refused(raw):
    r = await raw()
    await r.login()
    r.send(b"<message to='bob@localhost'><body>x&am")
    await asyncio.sleep(0.05)
    r.send(b"p;y &lt; &#65; &#x42;</body></message>")
    r.send(b"<message><body>&bo")
    await asyncio.sleep(0.05)
    r.send(b"gus;</body></message>")
    await expect_stream_error(r, "restricted-xml")


async def test_stanza_size_limit(server_factory):
    srv = await server_factory(max_stanza_size=10000)
    from ..conftest import add_user

    await add_user(srv, "alice")
    r = await Raw.open(srv.c2s_port)
    await r.login()
    r.send("<message to='alice@localhost'><body>" + "x" * 20000 + "</body></message>")
    await expect_stream_error(r, "policy-violation")
    r.close()


async def test_negotiation_timeout(server_factory):
    srv = await server_factory(negotiation_timeout=0.6)
    r = await Raw.open(srv.c2s_port)
    r.header()
    await r.expect(b"</stream:features>")
    await expect_stream_error(r, "connection-timeout")
    r.close()


async def test_dead_client_is_pinged_then_dropped(server_factory):
    srv = await server_factory(ping_interval=0.5, ping_timeout=0.6)
    from ..conftest import add_user

    await add_user(srv, "alice")
    r = await Raw.open(srv.c2s_port)
    await r.login()
    ping = await r.expect(rb"<iq[^>]*type=.get.[^>]*>.*?</iq>", timeout=5)
    assert b"urn:xmpp:ping" in ping
    await expect_stream_error(r, "connection-timeout")
    r.close()


async def test_answered_ping_keeps_session(server_factory):
    srv = await server_factory(ping_interval=0.4, ping_timeout=0.6)
    from ..conftest import add_user

    await add_user(srv, "alice")
    r = await Raw.open(srv.c2s_port)
    await r.login()
    for _ in range(3):
        ping = await r.expect(rb"<iq[^>]*>.*?</iq>", timeout=5)
        pid = re.search(rb"id=\"([^\"]+)\"", ping).group(1).decode()
        r.send(f"<iq type='result' id='{pid}' to='localhost'/>")
    assert await session_count(srv) == 1


async def test_whitespace_keepalive_and_clean_close(raw):
    r = await raw()
    await r.login()
    r.send(b"   \n  ")
    r.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    await r.expect(rb"<iq[^>]*id=\"p1\"[^>]*type=\"result\"|<iq[^>]*type=\"result\"[^>]*id=\"p1\"")
    r.send(b"</stream:stream>")
    rest = await r.closed()
    assert rest.endswith(b"</stream:stream>")


async def test_stanza_before_auth_is_not_authorized(raw):
    r = await raw()
    await r.starttls()
    r.header()
    await r.expect(b"</stream:features>")
    r.send("<message to='bob@localhost'><body>hi</body></message>")
    await expect_stream_error(r, "not-authorized")


async def test_stanza_before_bind_is_not_authorized(raw):
    r = await raw()
    await r.starttls()
    r.header()
    await r.expect(b"</stream:features>")
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    await r.expect(b"<success")
    r.header()
    feats = await r.expect(b"</stream:features>")
    assert b"urn:ietf:params:xml:ns:xmpp-bind" in feats
    r.send("<message to='bob@localhost'><body>hi</body></message>")
    await expect_stream_error(r, "not-authorized")


async def test_auth_before_tls_is_refused(raw):
    r = await raw()
    r.header()
    await r.expect(b"</stream:features>")
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    await r.expect(b'<failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><encryption-required/>')


async def _sasl_ready(raw) -> Raw:
    r = await raw()
    await r.starttls()
    r.header()
    await r.expect(b"</stream:features>")
    return r


SASL_FAIL = rb"<failure xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><{}/>"


async def test_sasl_wrong_password_not_authorized(raw):
    r = await _sasl_ready(raw)
    token = base64.b64encode(b"\0alice\0wrong").decode()
    r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    await r.expect(SASL_FAIL.replace(b"{}", b"not-authorized"))
    # the stream survives a failure: a second attempt may succeed
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    await r.expect(b"<success")


async def test_sasl_unknown_user_not_authorized(raw):
    r = await _sasl_ready(raw)
    token = base64.b64encode(b"\0nobody\0x").decode()
    r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    await r.expect(SASL_FAIL.replace(b"{}", b"not-authorized"))


async def test_sasl_invalid_mechanism(raw):
    r = await _sasl_ready(raw)
    r.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>")
    await r.expect(SASL_FAIL.replace(b"{}", b"invalid-mechanism"))


async def test_sasl_abort(raw):
    r = await _sasl_ready(raw)
    first = base64.b64encode(b"n,,n=alice,r=abcdefgh").decode()
    r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{first}</auth>")
    await r.expect(b"</challenge>")
    r.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    await r.expect(SASL_FAIL.replace(b"{}", b"aborted"))


async def test_sasl_malformed_request(raw):
    r = await _sasl_ready(raw)
    bad = base64.b64encode(b"garbage-without-gs2").decode()
    r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{bad}</auth>")
    await r.expect(SASL_FAIL.replace(b"{}", b"malformed-request"))


async def test_sasl_bad_base64_incorrect_encoding(raw):
    r = await _sasl_ready(raw)
    r.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!notbase64</auth>")
    await r.expect(SASL_FAIL.replace(b"{}", b"incorrect-encoding"))


async def _plain_auth(r: Raw, authzid: str, user: str = "alice") -> bytes:
    token = base64.b64encode(f"{authzid}\0{user}\0{PASSWORD}".encode()).decode()
    r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    return await r.expect(rb"<success[^>]*(/>|>[^<]*</success>)|</failure>")


async def test_plain_authzid_for_another_user_is_invalid_authzid(raw):
    r = await _sasl_ready(raw)
    # alice's own password, but asking to act as bob: refused (RFC 6120 6.5.6)
    out = await _plain_auth(r, "bob@localhost")
    assert re.search(SASL_FAIL.replace(b"{}", b"invalid-authzid"), out), out
    # the stream survives; the same credentials with alice's own authzid succeed
    out = await _plain_auth(r, "alice@localhost")
    assert b"<success" in out, out


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
async def test_scram_authzid_for_another_user_is_invalid_authzid(raw, mech):
    from ..xmpp.test_sasl import ScramClient

    r = await _sasl_ready(raw)
    # cbind 'n': this client does not do channel binding, so no downgrade check
    client = ScramClient(mech, "alice", PASSWORD, cbind="n", authzid="bob@localhost")
    first = base64.b64encode(client.first()).decode()
    r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{first}</auth>")
    out = await r.expect(b"</challenge>|</failure>")
    assert re.search(SASL_FAIL.replace(b"{}", b"invalid-authzid"), out), out
    # control: alice's own authzid goes through the whole exchange
    client = ScramClient(mech, "alice", PASSWORD, cbind="n", authzid="alice@localhost")
    first = base64.b64encode(client.first()).decode()
    r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{first}</auth>")
    out = await r.expect(b"</challenge>|</failure>")
    m = re.search(rb">([^<]+)</challenge>", out)
    assert m, out
    final = base64.b64encode(client.final(base64.b64decode(m.group(1)))).decode()
    r.send(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{final}</response>")
    out = await r.expect(rb"<success[^>]*(/>|>[^<]*</success>)|</failure>")
    m = re.search(rb">([^<]*)</success>", out)
    assert m and client.verify(base64.b64decode(m.group(1))), out


async def test_bind_generated_resource_and_legacy_session(raw):
    r = await raw()
    await r.starttls()
    r.header()
    await r.expect(b"</stream:features>")
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    await r.expect(b"<success")
    r.header()
    feats = await r.expect(b"</stream:features>")
    assert b"urn:ietf:params:xml:ns:xmpp-session" in feats
    r.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    out = await r.expect(b"</iq>")
    jid = re.search(rb"<jid>([^<]+)</jid>", out).group(1)
    assert jid.startswith(b"alice@localhost/") and len(jid) > len(b"alice@localhost/")
    r.send("<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    out = await r.expect(b"<iq[^>]*/>|</iq>")
    # the reply itself: one <iq/>, a result for our id, with no <error/> in it
    reply = ET.fromstring(out)
    assert reply.tag in ("iq", "{jabber:client}iq"), out
    assert reply.get("type") == "result" and reply.get("id") == "s", out
    assert reply.find("{jabber:client}error") is None and reply.find("error") is None, out


async def test_bind_conflict_replaces_older_session(server, raw):
    r1 = await raw()
    await r1.login(resource="same")
    r2 = await raw()
    jid = await r2.login(resource="same")
    assert jid == "alice@localhost/same"
    await expect_stream_error(r1, "conflict")
    assert await session_count(server) == 1


async def test_invalid_from_is_a_stream_error(raw):
    r = await raw()
    await r.login()
    r.send("<message from='bob@localhost/x' to='alice@localhost'><body>spoof</body></message>")
    await expect_stream_error(r, "invalid-from")


async def test_unknown_top_level_element(raw):
    r = await raw()
    await r.login()
    r.send("<foo xmlns='jabber:client'/>")
    await expect_stream_error(r, "unsupported-stanza-type")


async def test_jid_malformed_stanza_error(raw):
    r = await raw()
    await r.login()
    r.send("<message id='m1' to='a@b@c'><body>x</body></message>")
    out = await r.expect(b"</message>")
    assert b'type="error"' in out and b"<jid-malformed" in out


async def test_iq_with_two_payloads_is_bad_request(raw):
    r = await raw()
    await r.login()
    r.send("<iq type='get' id='q2' to='localhost'><ping xmlns='urn:xmpp:ping'/><x xmlns='y'/></iq>")
    out = await r.expect(b"</iq>")
    assert b"<bad-request" in out


async def test_system_shutdown_on_stop(server_factory):
    srv = await server_factory()
    from ..conftest import add_user

    await add_user(srv, "alice")
    r = await Raw.open(srv.c2s_port)
    await r.login()
    stop = asyncio.create_task(shutdown(srv))
    await expect_stream_error(r, "system-shutdown")
    await stop
    r.close()
