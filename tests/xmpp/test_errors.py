"""The error taxonomy: every RFC 6120 condition, defined once, rendered right."""

from __future__ import annotations

from lxml import etree

from services.xmpp.errors import (
    DEFAULT_TYPE,
    StanzaCondition,
    StanzaError,
    StreamCondition,
    StreamError,
    stanza_error_reply,
)

RFC6120_STANZA = """bad-request conflict feature-not-implemented forbidden gone internal-server-error
item-not-found jid-malformed not-acceptable not-allowed not-authorized policy-violation
recipient-unavailable redirect registration-required remote-server-not-found remote-server-timeout
resource-constraint service-unavailable subscription-required undefined-condition
unexpected-request""".split()

RFC6120_STREAM = """bad-format bad-namespace-prefix conflict connection-timeout host-gone host-unknown
improper-addressing internal-server-error invalid-from invalid-namespace invalid-xml not-authorized
not-well-formed policy-violation remote-connection-failed reset resource-constraint restricted-xml
see-other-host system-shutdown undefined-condition unsupported-encoding unsupported-feature
unsupported-stanza-type unsupported-version""".split()


def test_all_conditions_defined():
    assert sorted(c.value for c in StanzaCondition) == sorted(RFC6120_STANZA)
    assert len(RFC6120_STANZA) == 22
    assert sorted(c.value for c in StreamCondition) == sorted(RFC6120_STREAM)
    assert len(RFC6120_STREAM) == 25
    assert set(DEFAULT_TYPE) == set(StanzaCondition)


def test_stanza_error_element():
    for cond in StanzaCondition:
        el = StanzaError(cond, "why").to_element()
        assert el.tag == "{jabber:client}error" and el.get("type") == DEFAULT_TYPE[cond].value
        assert el[0].tag == f"{{urn:ietf:params:xml:ns:xmpp-stanzas}}{cond.value}"
        assert el[1].text == "why"


def test_stream_error_bytes():
    for cond in StreamCondition:
        data = StreamError(cond, "t<x>").to_bytes()
        wrapped = b"<s xmlns:stream='http://etherx.jabber.org/streams'>" + data + b"</s>"
        el = etree.fromstring(wrapped)[0]
        assert el.tag == "{http://etherx.jabber.org/streams}error"
        assert el[0].tag == f"{{urn:ietf:params:xml:ns:xmpp-streams}}{cond.value}"
        assert el[1].text == "t<x>"


def test_reply_swaps_addresses_and_keeps_message_payload():
    msg = etree.fromstring(
        "<message xmlns='jabber:client' from='a@b/c' to='d@e' id='1' type='chat'><body>x</body></message>"
    )
    reply = stanza_error_reply(msg, StanzaError(StanzaCondition.SERVICE_UNAVAILABLE))
    assert (reply.get("from"), reply.get("to"), reply.get("id"), reply.get("type")) == (
        "d@e",
        "a@b/c",
        "1",
        "error",
    )
    assert reply.findtext("{jabber:client}body") == "x"
    assert etree.tostring(reply).startswith(b'<message xmlns="jabber:client"')
    iq = etree.fromstring(
        "<iq xmlns='jabber:client' from='a@b/c' id='2' type='get'><q xmlns='x'/></iq>"
    )
    reply = stanza_error_reply(iq, StanzaError(StanzaCondition.BAD_REQUEST))
    assert len(reply) == 1 and reply[0].tag == "{jabber:client}error"
