"""XEP-0352 client state indication: what the edge holds back from an inactive client.

A client that sends ``<inactive/>`` (a phone whose screen is off) does not
need each contact's status change or typing notification the moment it
happens, and every write wakes its radio. :class:`CsiQueue` sits between
delivery and the stream of one session (``ClientSession.deliver``) and says,
without any I/O, what to write now and what to hold. The rules, after
Prosody's mod_csi_simple and ejabberd's mod_client_state:

- **Held**: availability presence (no ``type``, or ``unavailable``) and
  messages carrying only chat states (XEP-0085): no body, nothing but chat
  state elements beside a ``<thread/>``, processing hints (XEP-0334) or
  stanza ids (XEP-0359); and the ``<received/>`` carbon (XEP-0280) of such
  a message, sent to another of the user's clients (a ``<sent/>`` carbon
  is important: the user is busy on another client, which a phone shows by
  clearing its notifications, as Prosody reasons).
- **Collapsed**: of what is held, only the latest presence, the latest
  chat-state message and the latest chat-state carbon of each sender are
  kept (by ``from``, a full JID; for a carbon, by the copied message's
  ``from`` and ``to``): an unavailable presence replaces an earlier
  available one, and a newer chat state an older one. The newer stanza
  takes its own place in arrival order, not the replaced one's, so what is
  written is always a subsequence of what arrived, in the order it arrived:
  no sender's stanzas are ever reordered (RFC 6120 10.1).
- **Important**, everything else: a message with a body or with anything
  else (an encrypted payload, a receipt request, an invitation, a subject,
  an error, an event notification), an IQ, subscription and error presence,
  whatever is not a stanza. It is written at once, after everything held
  (in arrival order), so it never overtakes older stanzas.
- ``<active/>`` writes everything held, and holding stops.
- A stanza from the client writes what is held (the client stays inactive):
  its radio is awake anyway, as Prosody reasons.
- **Bounds**: past ``csi_max_held`` held stanzas (0: hold nothing), or past
  ``max_output_buffer`` held bytes, everything held is written; the
  transport's own output limits apply from there.
- **The end**: a session that ends while inactive drops what it held. That
  is presence and chat states only, nothing RFC 6121 asks the server to
  keep for later; a new session learns current presence from the probes
  its initial presence sends.

Classifying is cheap, since every delivered stanza would pay for it: the
leading tag name says presence, message or other; a presence's ``type`` and
``from`` come from its start tag; only messages are parsed, and only while
the client is inactive (an active session's deliveries are not looked at).
"""

from __future__ import annotations

import re

from lxml import etree

from ..xmpp import ns
from ..xmpp.tree import parse_element

__all__ = ["CsiQueue", "hold_key"]

#: what collapses held stanzas: (kind, the sender's ``from`` as serialized;
#: for a carbon the copied message's ``from`` and ``to``)
Key = tuple[str, bytes]

_HINTS = "urn:xmpp:hints"  # XEP-0334
_SID = "urn:xmpp:sid:0"  # XEP-0359
_RECEIVED = ns.q("urn:xmpp:carbons:2", "received")  # XEP-0280
_FORWARDED = ns.q("urn:xmpp:forward:0", "forwarded")  # XEP-0297
#: namespaces of children that leave a chat-state message unimportant
_COMPANIONS = frozenset({_HINTS, _SID})

# A start tag, scanned attribute by attribute: a value cannot contain its
# own quote, so a ``from=`` inside another attribute's value is never taken
# for the attribute (lxml always writes ``"``; single quotes are accepted too).
_NAME = re.compile(rb"<(?:[^\s/>:]+:)?([^\s/>:]+)")
_ATTR = re.compile(rb"""\s+([^\s=/>]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_CLOSE = re.compile(rb"\s*/?>")


def _start_tag(data: bytes) -> tuple[bytes, dict[bytes, bytes]] | None:
    """The local name of the leading element and its attributes (values as
    serialized, entities left alone); None when ``data`` does not start with
    a well-formed start tag."""
    m = _NAME.match(data)
    if m is None:
        return None
    name = m.group(1)
    attrs: dict[bytes, bytes] = {}
    pos = m.end()
    while (a := _ATTR.match(data, pos)) is not None:
        value = a.group(2)
        attrs[a.group(1)] = value if value is not None else a.group(3)
        pos = a.end()
    if _CLOSE.match(data, pos) is None:
        return None
    return name, attrs


def _chat_states_only(el: etree._Element) -> bool:
    """A message with at least one chat state and nothing that matters more."""
    tag = el.tag
    if not isinstance(tag, str):
        return False
    own = tag[1:].partition("}")[0] if tag.startswith("{") else ""
    thread = ns.q(own, "thread") if own else "thread"
    states = 0
    for child in el:
        ctag = child.tag
        if not isinstance(ctag, str):
            continue  # a comment or PI a stored stanza kept: no payload
        if ctag == thread:
            continue
        cns = ctag[1:].partition("}")[0] if ctag.startswith("{") else ""
        if cns == ns.CHATSTATES:
            states += 1
        elif cns not in _COMPANIONS:
            return False  # a body, an encrypted payload, a receipt request, ...
    return states > 0


def _received_carbon(el: etree._Element) -> etree._Element | None:
    """The message a ``<received/>`` carbon copies, when the carbon is all
    there is to ``el`` (beside companions such as a stanza id)."""
    received = None
    for child in el:
        ctag = child.tag
        if not isinstance(ctag, str):
            continue
        if ctag == _RECEIVED and received is None:
            received = child
        elif not ctag.startswith("{") or ctag[1:].partition("}")[0] not in _COMPANIONS:
            return None
    if received is None:
        return None
    forwarded = received.find(_FORWARDED)
    if forwarded is None:
        return None
    for child in forwarded:
        ctag = child.tag
        if isinstance(ctag, str) and ctag.endswith("}message"):
            return child
    return None


def hold_key(data: bytes) -> Key | None:
    """What an inactive client may be spared for now: the collapsing key of a
    stanza that can wait, None for one that cannot (see the module docstring)."""
    head = _start_tag(data)
    if head is None:
        return None
    name, attrs = head
    if name == b"presence":
        frm = attrs.get(b"from")
        typ = attrs.get(b"type")
        if frm is None or (typ is not None and typ != b"unavailable"):
            return None  # subscriptions, errors, probes; no sender: nothing to collapse by
        return ("presence", frm)
    if name == b"message":
        frm = attrs.get(b"from")
        if frm is None or attrs.get(b"type") == b"error":
            return None
        try:
            el = parse_element(data)
        except etree.XMLSyntaxError:
            return None
        if _chat_states_only(el):
            return ("message", frm)
        copied = _received_carbon(el)
        if copied is None or copied.get("type") == "error" or not _chat_states_only(copied):
            return None
        sender, to = copied.get("from"), copied.get("to")
        if sender is None or to is None:
            return None
        return ("carbon", f"{sender} {to}".encode())
    return None


class CsiQueue:
    """One session's client state and what it holds while inactive.

    :meth:`push` takes each stanza delivered to the session and returns what
    to write now, in order; :meth:`set_inactive`, :meth:`set_active`,
    :meth:`flush` and :meth:`drop` follow the client's nonzas, its own
    stanzas and the session's end."""

    __slots__ = ("_active", "_bytes", "_held", "max_bytes", "max_held")

    def __init__(self, max_held: int = 256, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_held = max_held
        self.max_bytes = max_bytes
        self._active = True  # XEP-0352 4: every stream starts active
        # a dict keeps insertion order: re-inserting a key moves it to the end,
        # which is how a newer stanza takes its own place in arrival order
        self._held: dict[Key, bytes] = {}
        self._bytes = 0

    @property
    def active(self) -> bool:
        return self._active

    @property
    def held(self) -> int:
        """Stanzas held now."""
        return len(self._held)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def set_inactive(self) -> None:
        self._active = False

    def set_active(self) -> list[bytes]:
        """The client is back: everything held, to write now."""
        self._active = True
        return self.flush()

    def flush(self) -> list[bytes]:
        """Everything held, in arrival order, to write now; holding goes on
        while the client stays inactive."""
        if not self._held:
            return []
        out = list(self._held.values())
        self._held.clear()
        self._bytes = 0
        return out

    def drop(self) -> int:
        """The session is over: forget what is held; how many there were."""
        n = len(self._held)
        self._held.clear()
        self._bytes = 0
        return n

    def push(self, data: bytes) -> list[bytes]:
        """A stanza for the client: what to write now, in order (often nothing)."""
        if self._active:
            return [data]
        key = hold_key(data)
        if key is None:
            out = self.flush()
            out.append(data)
            return out
        old = self._held.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        self._held[key] = data
        self._bytes += len(data)
        if len(self._held) > self.max_held or self._bytes > self.max_bytes:
            return self.flush()
        return []
