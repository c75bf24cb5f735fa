"""XML namespaces used across the server, in one place."""

from typing import Final

STREAM: Final = "http://etherx.jabber.org/streams"
CLIENT: Final = "jabber:client"
SERVER: Final = "jabber:server"
COMPONENT: Final = "jabber:component:accept"  # XEP-0114
STREAMS_ERR: Final = "urn:ietf:params:xml:ns:xmpp-streams"
STANZAS_ERR: Final = "urn:ietf:params:xml:ns:xmpp-stanzas"
TLS: Final = "urn:ietf:params:xml:ns:xmpp-tls"
SASL: Final = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND: Final = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION: Final = "urn:ietf:params:xml:ns:xmpp-session"
ROSTER: Final = "jabber:iq:roster"
ROSTERVER_FEATURE: Final = "urn:xmpp:features:rosterver"
PRE_APPROVAL_FEATURE: Final = "urn:xmpp:features:pre-approval"
DISCO_INFO: Final = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS: Final = "http://jabber.org/protocol/disco#items"
DATA_FORMS: Final = "jabber:x:data"
CAPS: Final = "http://jabber.org/protocol/caps"
VERSION: Final = "jabber:iq:version"
PING: Final = "urn:xmpp:ping"
TIME: Final = "urn:xmpp:time"
LAST: Final = "jabber:iq:last"
IDLE: Final = "urn:xmpp:idle:1"
REGISTER: Final = "jabber:iq:register"
REGISTER_FEATURE: Final = "http://jabber.org/features/iq-register"
VCARD: Final = "vcard-temp"
VCARD_UPDATE: Final = "vcard-temp:x:update"  # XEP-0153
PRIVATE: Final = "jabber:iq:private"
BLOCKING: Final = "urn:xmpp:blocking"
BLOCKING_ERRORS: Final = "urn:xmpp:blocking:errors"
DELAY: Final = "urn:xmpp:delay"
OFFLINE: Final = "msgoffline"
CHATSTATES: Final = "http://jabber.org/protocol/chatstates"
SERVERINFO: Final = "http://jabber.org/network/serverinfo"
XML: Final = "http://www.w3.org/XML/1998/namespace"


def q(ns: str, local: str) -> str:
    """Clark notation: ``{ns}local``, the tag form lxml uses."""
    return f"{{{ns}}}{local}"
