"""The one place XMPP error conditions live.

Handlers raise :class:`StanzaError` or :class:`StreamError` values; the edge
and the router turn them into wire elements with :func:`stanza_error_reply`
and :meth:`StreamError.to_element`. No handler builds an error element by hand.
"""

from __future__ import annotations

import enum

from lxml import etree

from . import ns


class ErrorType(enum.StrEnum):
    AUTH = "auth"
    CANCEL = "cancel"
    CONTINUE = "continue"
    MODIFY = "modify"
    WAIT = "wait"


class StanzaCondition(enum.StrEnum):
    """RFC 6120 section 8.3.3: the 22 defined stanza error conditions."""

    BAD_REQUEST = "bad-request"
    CONFLICT = "conflict"
    FEATURE_NOT_IMPLEMENTED = "feature-not-implemented"
    FORBIDDEN = "forbidden"
    GONE = "gone"
    INTERNAL_SERVER_ERROR = "internal-server-error"
    ITEM_NOT_FOUND = "item-not-found"
    JID_MALFORMED = "jid-malformed"
    NOT_ACCEPTABLE = "not-acceptable"
    NOT_ALLOWED = "not-allowed"
    NOT_AUTHORIZED = "not-authorized"
    POLICY_VIOLATION = "policy-violation"
    RECIPIENT_UNAVAILABLE = "recipient-unavailable"
    REDIRECT = "redirect"
    REGISTRATION_REQUIRED = "registration-required"
    REMOTE_SERVER_NOT_FOUND = "remote-server-not-found"
    REMOTE_SERVER_TIMEOUT = "remote-server-timeout"
    RESOURCE_CONSTRAINT = "resource-constraint"
    SERVICE_UNAVAILABLE = "service-unavailable"
    SUBSCRIPTION_REQUIRED = "subscription-required"
    UNDEFINED_CONDITION = "undefined-condition"
    UNEXPECTED_REQUEST = "unexpected-request"


#: The error type RFC 6120 section 8.3.3 recommends for each condition.
DEFAULT_TYPE: dict[StanzaCondition, ErrorType] = {
    StanzaCondition.BAD_REQUEST: ErrorType.MODIFY,
    StanzaCondition.CONFLICT: ErrorType.CANCEL,
    StanzaCondition.FEATURE_NOT_IMPLEMENTED: ErrorType.CANCEL,
    StanzaCondition.FORBIDDEN: ErrorType.AUTH,
    StanzaCondition.GONE: ErrorType.CANCEL,
    StanzaCondition.INTERNAL_SERVER_ERROR: ErrorType.CANCEL,
    StanzaCondition.ITEM_NOT_FOUND: ErrorType.CANCEL,
    StanzaCondition.JID_MALFORMED: ErrorType.MODIFY,
    StanzaCondition.NOT_ACCEPTABLE: ErrorType.MODIFY,
    StanzaCondition.NOT_ALLOWED: ErrorType.CANCEL,
    StanzaCondition.NOT_AUTHORIZED: ErrorType.AUTH,
    StanzaCondition.POLICY_VIOLATION: ErrorType.MODIFY,
    StanzaCondition.RECIPIENT_UNAVAILABLE: ErrorType.WAIT,
    StanzaCondition.REDIRECT: ErrorType.MODIFY,
    StanzaCondition.REGISTRATION_REQUIRED: ErrorType.AUTH,
    StanzaCondition.REMOTE_SERVER_NOT_FOUND: ErrorType.CANCEL,
    StanzaCondition.REMOTE_SERVER_TIMEOUT: ErrorType.WAIT,
    StanzaCondition.RESOURCE_CONSTRAINT: ErrorType.WAIT,
    StanzaCondition.SERVICE_UNAVAILABLE: ErrorType.CANCEL,
    StanzaCondition.SUBSCRIPTION_REQUIRED: ErrorType.AUTH,
    StanzaCondition.UNDEFINED_CONDITION: ErrorType.CANCEL,
    StanzaCondition.UNEXPECTED_REQUEST: ErrorType.WAIT,
}


class StreamCondition(enum.StrEnum):
    """RFC 6120 section 4.9.3: the defined stream error conditions."""

    BAD_FORMAT = "bad-format"
    BAD_NAMESPACE_PREFIX = "bad-namespace-prefix"
    CONFLICT = "conflict"
    CONNECTION_TIMEOUT = "connection-timeout"
    HOST_GONE = "host-gone"
    HOST_UNKNOWN = "host-unknown"
    IMPROPER_ADDRESSING = "improper-addressing"
    INTERNAL_SERVER_ERROR = "internal-server-error"
    INVALID_FROM = "invalid-from"
    INVALID_NAMESPACE = "invalid-namespace"
    INVALID_XML = "invalid-xml"
    NOT_AUTHORIZED = "not-authorized"
    NOT_WELL_FORMED = "not-well-formed"
    POLICY_VIOLATION = "policy-violation"
    REMOTE_CONNECTION_FAILED = "remote-connection-failed"
    RESET = "reset"
    RESOURCE_CONSTRAINT = "resource-constraint"
    RESTRICTED_XML = "restricted-xml"
    SEE_OTHER_HOST = "see-other-host"
    SYSTEM_SHUTDOWN = "system-shutdown"
    UNDEFINED_CONDITION = "undefined-condition"
    UNSUPPORTED_ENCODING = "unsupported-encoding"
    UNSUPPORTED_FEATURE = "unsupported-feature"
    UNSUPPORTED_STANZA_TYPE = "unsupported-stanza-type"
    UNSUPPORTED_VERSION = "unsupported-version"


class SaslCondition(enum.StrEnum):
    """RFC 6120 section 6.5: SASL failure conditions."""

    ABORTED = "aborted"
    ACCOUNT_DISABLED = "account-disabled"
    CREDENTIALS_EXPIRED = "credentials-expired"
    ENCRYPTION_REQUIRED = "encryption-required"
    INCORRECT_ENCODING = "incorrect-encoding"
    INVALID_AUTHZID = "invalid-authzid"
    INVALID_MECHANISM = "invalid-mechanism"
    MALFORMED_REQUEST = "malformed-request"
    MECHANISM_TOO_WEAK = "mechanism-too-weak"
    NOT_AUTHORIZED = "not-authorized"
    TEMPORARY_AUTH_FAILURE = "temporary-auth-failure"


class XmppError(Exception):
    """Base of protocol errors that carry the condition to put on the wire."""


class StanzaError(XmppError):
    """A stanza-level error: the stanza is answered, the stream goes on."""

    def __init__(
        self,
        condition: StanzaCondition,
        text: str | None = None,
        type_: ErrorType | None = None,
        app_condition: etree._Element | None = None,
    ) -> None:
        super().__init__(f"{condition.value}: {text}" if text else condition.value)
        self.condition = condition
        self.text = text
        self.type = type_ or DEFAULT_TYPE[condition]
        self.app_condition = app_condition

    def to_element(self, stream_ns: str = ns.CLIENT) -> etree._Element:
        err = etree.Element(ns.q(stream_ns, "error"), nsmap={None: stream_ns})
        err.set("type", self.type.value)
        etree.SubElement(
            err, ns.q(ns.STANZAS_ERR, self.condition.value), nsmap={None: ns.STANZAS_ERR}
        )
        if self.text:
            t = etree.SubElement(err, ns.q(ns.STANZAS_ERR, "text"), nsmap={None: ns.STANZAS_ERR})
            t.text = self.text
        if self.app_condition is not None:
            err.append(self.app_condition)
        return err


class StreamError(XmppError):
    """A stream-level error: the stream is closed after it is sent."""

    def __init__(
        self, condition: StreamCondition, text: str | None = None, other_host: str | None = None
    ) -> None:
        super().__init__(f"{condition.value}: {text}" if text else condition.value)
        self.condition = condition
        self.text = text
        self.other_host = other_host

    def to_element(self) -> etree._Element:
        err = etree.Element(ns.q(ns.STREAM, "error"), nsmap={"stream": ns.STREAM})
        cond = etree.SubElement(
            err, ns.q(ns.STREAMS_ERR, self.condition.value), nsmap={None: ns.STREAMS_ERR}
        )
        if self.other_host:
            cond.text = self.other_host
        if self.text:
            t = etree.SubElement(err, ns.q(ns.STREAMS_ERR, "text"), nsmap={None: ns.STREAMS_ERR})
            t.text = self.text
        return err

    def to_bytes(self) -> bytes:
        """The error as sent inside our own stream, where ``stream:`` is declared."""
        cond = self.condition.value
        inner = (
            f"<{cond} xmlns='{ns.STREAMS_ERR}'>{_esc(self.other_host)}</{cond}>"
            if self.other_host
            else f"<{cond} xmlns='{ns.STREAMS_ERR}'/>"
        )
        if self.text:
            inner += f"<text xmlns='{ns.STREAMS_ERR}'>{_esc(self.text)}</text>"
        return f"<stream:error>{inner}</stream:error>".encode()


class SaslFailure(XmppError):
    def __init__(self, condition: SaslCondition, text: str | None = None) -> None:
        super().__init__(condition.value)
        self.condition = condition
        self.text = text

    def to_element(self) -> etree._Element:
        el = etree.Element(ns.q(ns.SASL, "failure"), nsmap={None: ns.SASL})
        etree.SubElement(el, ns.q(ns.SASL, self.condition.value))
        if self.text:
            etree.SubElement(el, ns.q(ns.SASL, "text")).text = self.text
        return el


def stanza_error_reply(
    stanza: etree._Element, error: StanzaError, stream_ns: str = ns.CLIENT
) -> etree._Element:
    """Build the error reply to ``stanza`` (RFC 6120 section 8.3.1).

    The reply swaps ``from``/``to``, keeps ``id``, sets ``type='error'``, and
    for IQs drops the original payload, for other stanzas keeps it, which is
    what RFC 6120 permits and what clients expect to correlate the bounce.
    """
    local = etree.QName(stanza).localname if isinstance(stanza.tag, str) else "message"
    reply = etree.Element(ns.q(stream_ns, local), nsmap={None: stream_ns})
    for attr in ("id",):
        v = stanza.get(attr)
        if v is not None:
            reply.set(attr, v)
    frm, to = stanza.get("from"), stanza.get("to")
    if frm is not None:
        reply.set("to", frm)
    if to is not None:
        reply.set("from", to)
    reply.set("type", "error")
    if etree.QName(stanza).localname != "iq":
        for child in stanza:
            if etree.QName(child).namespace != ns.STANZAS_ERR and child.tag != ns.q(
                stream_ns, "error"
            ):
                reply.append(_copy(child))
    reply.append(error.to_element(stream_ns))
    return reply


def _copy(el: etree._Element) -> etree._Element:
    import copy

    return copy.deepcopy(el)


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
