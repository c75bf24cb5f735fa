"""An asyncio raw-socket XMPP load generator, run in several worker processes.

Each worker process runs its own event loop (uvloop when installed) with many
minimal clients: TCP, STARTTLS (no certificate verification), SASL PLAIN or
SCRAM-SHA-1/SHA-256, resource binding, the legacy session when a server
requires it, an optional roster fetch and initial presence. Nothing here
parses XML properly: a tag-level regex cuts the byte stream into top-level
elements, which is all a load generator needs and costs a few microseconds
per stanza (slixmpp costs hundreds, which would make the client the
bottleneck on a small machine).

The coordinator (:class:`LoadGen`, in the calling process) sends each worker
one command at a time over a pipe and gathers the replies; the scenario
functions below drive it and measure the server from ``/proc``
(:class:`ProcTree`). Every reply carries the worker's own CPU time so the
reports can show what the load generator itself used.

Scenarios (each returns a JSON-able dict; :func:`table` prints one):

* :func:`login_storm` - M clients log in; logins/s, login latency, server CPU per login;
* :func:`messages` - K clients in pairs send each other messages with a
  timestamp in the body, in a closed loop with a bounded window per direction
  or at a fixed total rate; delivered/s, end-to-end latency, lost, server CPU
  per delivered message;
* :func:`idle` - C sessions held; server memory per connection;
* :func:`presence_storm` - users with mutual rosters log in, fetch the roster
  and send initial presence; presence stanzas delivered/s, server CPU per login;
* :func:`muc` - group chat (XEP-0045): rooms of N occupants, one connection
  each; a few occupants per room post in a closed loop (the next message once
  every occupant has received the last) and every occupant receives the
  fan-out; deliveries/s, delivery latency, lost deliveries, server CPU per
  delivery;
* :func:`pep` - personal eventing (XEP-0163): publishers, each with C
  contacts whose initial presence carries entity capabilities (XEP-0115)
  asking for the bench node's notifications, publish in a closed loop (the
  next item once every contact has the last one's notification);
  notifications/s, notification latency, lost notifications, server CPU per
  notification.

Usable on its own against a running server whose users already exist::

    python bench/loadgen.py --port 5222 --pid SERVER_PID --scenario messages \\
        --user-format 'u{}' --password secret --clients 100 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import re
import resource
import secrets
import signal
import ssl
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------- XML bytes

#: one tag: (closing slash, name, self-closing slash)
_TAG = re.compile(rb"<(/?)([^\s/>]+)[^>]*?(/?)>")
_MECH = re.compile(rb"<mechanism>\s*([^<\s]+)\s*</mechanism>")
_TEXT = re.compile(rb">([^<]*)<")
_ATTR_ID = re.compile(rb"""\sid=(?:'([^']*)'|"([^"]*)")""")
_ATTR_FROM = re.compile(rb"""\sfrom=(?:'([^'/]*)|"([^"/]*))""")
_ATTR_FROM_FULL = re.compile(rb"""\sfrom=(?:'([^']*)'|"([^"]*)")""")
_ATTR_TYPE = re.compile(rb"""\stype=(?:'([^']*)'|"([^"]*)")""")
_JID = re.compile(rb"<jid>([^<]+)</jid>")
_ATTR_NODE = re.compile(rb"""\snode=(?:'([^']*)'|"([^"]*)")""")

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
STARTTLS = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
CLOSE = b"</stream:stream>"


# ------------------------------------------------- entity capabilities, PEP

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
#: the PEP node the bench publishes to, and the namespace of its payload
PEP_NODE = "urn:xmpp:bench:pep"
#: the client software's caps node (XEP-0115 ``node``)
CAPS_NODE = "urn:xmpp:bench:client"
#: what every load generator client says it is and supports (disco#info):
#: it asks for the bench node's notifications (XEP-0163 4.1, ``+notify``)
CLIENT_IDENTITY = ("client", "bot", "", "xmppd bench")
CLIENT_FEATURES = (
    NS_CAPS,
    NS_DISCO_INFO,
    PEP_NODE + "+notify",
    "urn:xmpp:ping",
)


def caps_ver(identities: Iterable[tuple[str, str, str, str]], features: Iterable[str]) -> str:
    """The XEP-0115 verification string (section 5.1, SHA-1, no forms) of
    identities ``(category, type, lang, name)`` and features."""
    s = "".join(f"{c}/{t}/{lang}/{name}<" for c, t, lang, name in sorted(identities))
    s += "".join(f"{f}<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


CLIENT_VER = caps_ver([CLIENT_IDENTITY], CLIENT_FEATURES)
#: the initial presence of a client that announces its capabilities
CAPS_PRESENCE = (
    f"<presence><c xmlns='{NS_CAPS}' hash='sha-1' node='{CAPS_NODE}' ver='{CLIENT_VER}'/>"
    "</presence>"
).encode()
_DISCO_INFO_BODY = (
    "<identity category='{}' type='{}' name='{}'/>".format(*CLIENT_IDENTITY[:2], CLIENT_IDENTITY[3])
    + "".join(f"<feature var='{f}'/>" for f in CLIENT_FEATURES)
).encode()


def disco_info_result(iq_id: bytes, to: bytes | None, node: bytes | None) -> bytes:
    """The answer to a disco#info query (the server asking what ``node#ver``
    stands for): the same identity and features whatever the node."""
    return b"<iq type='result' id='%s'%s><query xmlns='%s'%s>%s</query></iq>" % (
        iq_id,
        b" to='%s'" % to if to else b"",
        NS_DISCO_INFO.encode(),
        b" node='%s'" % node if node else b"",
        _DISCO_INFO_BODY,
    )


def pep_publish_template(tag: str) -> bytes:
    """A publish to the bench node (XEP-0163 7.1: no ``to``, the account's own
    service); ``% (iq_id, seq, sent_ns)`` fills it. The item id is always
    ``current`` (one item per node on every server, whatever its max_items);
    the payload carries the phase's tag, a sequence number and the send time."""
    return (
        f"<iq type='set' id='%s'><pubsub xmlns='{NS_PUBSUB}'><publish node='{PEP_NODE}'>"
        f"<item id='current'><stamp xmlns='{PEP_NODE}'>{tag} %d %d</stamp></item>"
        "</publish></pubsub></iq>"
    ).encode()


def stream_header(domain: str) -> bytes:
    return (
        f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en'"
        " xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    ).encode()


def _attr(rx: re.Pattern[bytes], el: bytes) -> bytes | None:
    head = el[: el.find(b">") + 1]
    m = rx.search(head)
    if m is None:
        return None
    return m.group(1) if m.group(1) is not None else m.group(2)


def _unescape(b: bytes) -> bytes:
    return (
        b.replace(b"&lt;", b"<")
        .replace(b"&gt;", b">")
        .replace(b"&quot;", b'"')
        .replace(b"&apos;", b"'")
        .replace(b"&amp;", b"&")
    )


def _error_sample(el: bytes) -> str:
    """The head of an error stanza and its ``<error>`` element (which comes
    after the echoed payload)."""
    i = el.find(b"<error")
    tail = b" ... " + el[i : i + 250] if i > 200 else b""
    return (el[: min(len(el), 200 if tail else 300)] + tail).decode(errors="replace")


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;")


class Splitter:
    """Cuts a stream of bytes into top-level elements.

    Returns the stream header (its opening tag), each complete stanza or
    negotiation element, and ``</stream:stream>`` when the server closes.
    Call :meth:`reset` when the stream restarts (after STARTTLS and SASL).
    """

    __slots__ = ("buf", "depth", "pos", "start")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.buf = b""
        self.pos = 0
        self.depth = 0
        self.start = -1

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf + data if self.buf else data
        out: list[bytes] = []
        depth, start, pos = self.depth, self.start, self.pos
        for m in _TAG.finditer(buf, pos):
            close, name, selfclose = m.groups()
            pos = m.end()
            if name[0] in b"?!":
                continue
            if close:
                depth -= 1
                if depth == 1:
                    out.append(buf[start:pos])
                    start = -1
                elif depth <= 0:
                    out.append(CLOSE)
                    depth = 0
            elif selfclose:
                if depth == 1:
                    out.append(buf[m.start() : pos])
            elif depth == 0:
                out.append(buf[m.start() : pos])  # the stream header
                depth = 1
            else:
                if depth == 1:
                    start = m.start()
                depth += 1
        if start >= 0:
            buf, pos, start = buf[start:], pos - start, 0
        else:
            buf, pos = buf[pos:], 0
        self.buf, self.pos, self.depth, self.start = buf, pos, depth, start
        return out


# ---------------------------------------------------------------------- SASL


class LoginError(Exception):
    pass


def _b64(b: bytes) -> bytes:
    return base64.b64encode(b)


def _auth(mech: str, payload: bytes) -> bytes:
    return b"<auth xmlns='%s' mechanism='%s'>%s</auth>" % (
        NS_SASL.encode(),
        mech.encode(),
        _b64(payload) if payload else b"=",
    )


class Scram:
    """The client side of SCRAM-SHA-1/SHA-256 (RFC 5802), no channel binding."""

    def __init__(self, hash_name: str, user: str, password: str) -> None:
        self.h = hash_name
        self.password = password.encode()
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self.bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={self.nonce}"
        self.server_sig = b""

    def first(self) -> bytes:
        return ("n,," + self.bare).encode()

    def final(self, server_first: bytes) -> bytes:
        parts = dict(p.split("=", 1) for p in server_first.decode().split(","))
        if not parts["r"].startswith(self.nonce):
            raise LoginError("SCRAM nonce mismatch")
        salt = base64.b64decode(parts["s"])
        salted = hashlib.pbkdf2_hmac(self.h, self.password, salt, int(parts["i"]))
        client_key = hmac.new(salted, b"Client Key", self.h).digest()
        stored = hashlib.new(self.h, client_key).digest()
        without_proof = "c=biws,r=" + parts["r"]
        msg = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        sig = hmac.new(stored, msg, self.h).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig, strict=True))
        server_key = hmac.new(salted, b"Server Key", self.h).digest()
        self.server_sig = hmac.new(server_key, msg, self.h).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        fields = dict(p.split("=", 1) for p in server_final.decode().split(",") if "=" in p)
        if base64.b64decode(fields.get("v", "")) != self.server_sig:
            raise LoginError("SCRAM server signature mismatch")


_SCRAM_HASH = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}
MECHANISMS = ("PLAIN", *_SCRAM_HASH)


def _client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# -------------------------------------------------------------------- client


class Client:
    """One connection. Negotiates with awaits, then runs a read loop that
    dispatches every stanza to :meth:`on_element` without further awaits."""

    __slots__ = (
        "complete_at",
        "expect",
        "full_jid",
        "inflight",
        "muc",
        "partner",
        "password",
        "pep",
        "presences",
        "reader",
        "resource",
        "seen",
        "split",
        "stash",
        "task",
        "to_partner",
        "user",
        "w",
        "writer",
    )

    def __init__(self, w: Worker, user: str, password: str, resource: str) -> None:
        self.w = w
        self.user = user
        self.password = password
        self.resource = resource
        self.split = Splitter()
        self.stash: deque[bytes] = deque()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.full_jid = b""
        self.partner: Client | None = None
        self.to_partner = b""
        self.inflight = 0
        self.presences = 0
        self.seen: set[bytes] | None = None
        self.expect = 0
        self.complete_at = 0.0
        self.muc: Occupancy | None = None
        self.pep: PepRole | None = None

    # ---- negotiation
    async def _next(self) -> bytes:
        while not self.stash:
            assert self.reader is not None
            data = await self.reader.read(65536)
            if not data:
                raise LoginError("connection closed by the server")
            self.stash.extend(self.split.feed(data))
        el = self.stash.popleft()
        if el == CLOSE or el.startswith((b"<stream:error", b"<error")):
            raise LoginError("stream error: " + el[:300].decode(errors="replace"))
        return el

    async def _restart(self, domain: str) -> bytes:
        assert self.writer is not None
        self.split.reset()
        self.stash.clear()
        self.writer.write(stream_header(domain))
        header = await self._next()
        if b"stream" not in header[:20]:
            raise LoginError(f"expected a stream header, got {header[:200]!r}")
        feats = await self._next()
        if b"features" not in feats[:30]:
            raise LoginError(f"expected stream features, got {feats[:200]!r}")
        return feats

    async def _iq(self, iq_id: bytes, payload: bytes) -> bytes:
        assert self.writer is not None
        self.writer.write(payload)
        while True:
            el = await self._next()
            if el.startswith(b"<iq") and _attr(_ATTR_ID, el) == iq_id:
                if _attr(_ATTR_TYPE, el) != b"result":
                    raise LoginError("iq failed: " + el[:300].decode(errors="replace"))
                return el
            self.stash_later(el)

    def stash_later(self, el: bytes) -> None:
        # stanzas that arrive during negotiation are dispatched once established
        self.w.early.append((self, el))

    async def login(
        self,
        host: str,
        port: int,
        domain: str,
        mech: str,
        roster: bool,
        presence: bytes = b"<presence/>",
    ) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        w = self.writer
        feats = await self._restart(domain)
        if b"starttls" not in feats:
            raise LoginError("the server offers no STARTTLS")
        w.write(STARTTLS)
        el = await self._next()
        if not el.startswith(b"<proceed"):
            raise LoginError(f"STARTTLS refused: {el[:200]!r}")
        await w.start_tls(self.w.tls, server_hostname=domain)
        feats = await self._restart(domain)
        offered = {m.decode() for m in _MECH.findall(feats)}
        if mech not in offered:
            raise LoginError(f"{mech} not offered (offered: {sorted(offered)})")
        if mech == "PLAIN":
            w.write(_auth(mech, f"\0{self.user}\0{self.password}".encode()))
            el = await self._next()
        else:
            scram = Scram(_SCRAM_HASH[mech], self.user, self.password)
            w.write(_auth(mech, scram.first()))
            el = await self._next()
            if not el.startswith(b"<challenge"):
                raise LoginError("authentication failed: " + el[:300].decode(errors="replace"))
            m = _TEXT.search(el)
            w.write(
                b"<response xmlns='%s'>%s</response>"
                % (NS_SASL.encode(), _b64(scram.final(base64.b64decode(m.group(1) if m else b""))))
            )
            el = await self._next()
            if el.startswith(b"<success"):
                m = _TEXT.search(el)
                scram.verify(base64.b64decode(m.group(1)) if m and m.group(1) else b"")
        if not el.startswith(b"<success"):
            raise LoginError("authentication failed: " + el[:300].decode(errors="replace"))
        feats = await self._restart(domain)
        res = await self._iq(
            b"bind",
            b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            b"<resource>%s</resource></bind></iq>" % self.resource.encode(),
        )
        m = _JID.search(res)
        if m is None:
            raise LoginError("no JID in the bind result")
        self.full_jid = _unescape(m.group(1))
        i = feats.find(b"urn:ietf:params:xml:ns:xmpp-session")
        if i >= 0 and b"<optional" not in feats[i : feats.find(b"</session>", i) + 1]:
            await self._iq(
                b"sess",
                b"<iq type='set' id='sess'>"
                b"<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
            )
        if roster:
            await self._iq(
                b"roster", b"<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>"
            )
        w.write(presence)
        # logged in once the server has processed the initial presence: every
        # server echoes it to the sender's own available resource (RFC 6121 4.2.2)
        while self.presences == 0:
            self.on_element(await self._next())

    def start_reading(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._read_loop())

    async def _read_loop(self) -> None:
        assert self.reader is not None
        on = self.on_element
        split = self.split
        read = self.reader.read
        while self.stash:
            on(self.stash.popleft())
        try:
            while True:
                data = await read(262144)
                if not data:
                    break
                for el in split.feed(data):
                    on(el)
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        if not self.w.closing:
            self.w.dropped += 1

    # ---- established
    def on_element(self, el: bytes) -> None:
        w = self.w
        if el.startswith(b"<message"):
            if self.pep is not None:
                self.on_pep_message(el)
                return
            if self.muc is not None:
                self.on_muc_message(el)
                return
            head = el[: el.find(b">")]
            if b"error" in head:
                w.errors += 1
                self.inflight -= 1
                return
            i = el.find(b"<body>")
            if i < 0:
                return
            j = el.find(b"</body>", i)
            body = el[i + 6 : j]
            sent_ns = int(body[body.find(b" ") + 1 :])
            now = time.perf_counter_ns()
            w.received += 1
            sender = self.partner
            if sender is not None:
                sender.inflight -= 1
            if w.m0 <= now <= w.m1:
                w.in_window += 1
                w.lat.append((now - sent_ns) / 1000.0)
            if w.refill and sender is not None:
                sender.send_message()
        elif el.startswith(b"<presence"):
            self.presences += 1
            w.presences += 1
            if self.seen is not None:
                frm = _attr(_ATTR_FROM, el)
                if frm is not None:
                    self.seen.add(frm)
                    if not self.complete_at and len(self.seen) >= self.expect:
                        self.complete_at = time.monotonic()
            if self.muc is not None:
                self.muc.on_presence(el)
        elif el.startswith(b"<iq"):
            typ = _attr(_ATTR_TYPE, el)
            if typ == b"get" and b"urn:xmpp:ping" in el:
                iq_id = _attr(_ATTR_ID, el) or b""
                frm = _attr(_ATTR_FROM_FULL, el)
                to = b" to='%s'" % frm if frm else b""
                self.send(b"<iq type='result' id='%s'%s/>" % (iq_id, to))
            elif typ == b"get" and NS_DISCO_INFO.encode() in el:
                # a server asking what our caps ``ver`` stands for (XEP-0115 6.3)
                self.answer_disco(el)
            elif self.pep is not None:
                self.on_pep_iq(el, typ)
            elif self.muc is not None:
                self.muc.on_iq(el)
        elif el == CLOSE:
            w.dropped += 1

    def send(self, data: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)

    def send_message(self) -> None:
        w = self.w
        w.seq += 1
        self.inflight += 1
        w.sent += 1
        self.send(self.to_partner % (w.seq, w.seq, time.perf_counter_ns()))

    # ---- group chat
    def on_muc_message(self, el: bytes) -> None:
        """A groupchat message: one delivery of a message some occupant posted
        (body ``SEQ SENT_NS``), the room's subject (the end of a join), or an error."""
        w = self.w
        head = el[: el.find(b">")]
        if b"'error'" in head or b'"error"' in head:
            w.errors += 1
            if len(w.error_samples) < 5:
                w.error_samples.append(el[:300].decode(errors="replace"))
            return
        i = el.find(b"<body>")
        if i < 0:
            if b"<subject" in el:
                assert self.muc is not None
                self.muc.joined = True
            return
        body = el[i + 6 : el.find(b"</body>", i)]
        sp = body.find(b" ")
        seq = int(body[:sp])
        now = time.perf_counter_ns()
        w.received += 1
        if w.m0 <= now <= w.m1:
            w.in_window += 1
            w.lat.append((now - int(body[sp + 1 :])) / 1000.0)
        entry = w.pending.get(seq)
        if entry is None:
            w.unexpected += 1  # a duplicate, or a message of an earlier phase
            return
        entry[0] -= 1
        if entry[0] == 0:  # every occupant has it: the sender posts its next one
            del w.pending[seq]
            if w.refill:
                entry[1].send_groupchat()

    def send_groupchat(self) -> None:
        w = self.w
        m = self.muc
        assert m is not None
        w.seq += 1
        w.sent += 1
        w.expected += m.size
        w.pending[w.seq] = [m.size, self]
        now = time.perf_counter_ns()
        if w.m0 <= now <= w.m1:
            w.sent_in_window += 1
        self.send(m.post % (w.seq, w.seq, now))

    # ---- personal eventing
    def answer_disco(self, el: bytes) -> None:
        w = self.w
        frm = _attr(_ATTR_FROM_FULL, el)
        m = _ATTR_NODE.search(el)
        node = (m.group(1) if m.group(1) is not None else m.group(2)) if m else None
        w.disco_answered += 1
        if frm is not None and len(w.disco_from) < 8:
            w.disco_from.add(frm.split(b"/")[0].decode(errors="replace"))
        self.send(disco_info_result(_attr(_ATTR_ID, el) or b"", frm, node))

    def on_pep_iq(self, el: bytes, typ: bytes | None) -> None:
        """The publisher's publish results and errors."""
        w = self.w
        if typ == b"result":
            w.acked += 1
        elif typ == b"error":
            w.errors += 1
            if len(w.error_samples) < 5:
                w.error_samples.append(_error_sample(el))

    def on_pep_message(self, el: bytes) -> None:
        """A PEP notification of the bench node (payload ``TAG SEQ SENT_NS``):
        one delivery of a publish of this phase (TAG is its tag), a prime of
        this phase (SEQ 0), or the last item of an earlier phase (another
        TAG: the last item sent on presence, XEP-0163 6.3). A contact that
        receives the same publish again (the publish is complete, or this
        contact is already among those that have it) counts a duplicate, not
        a delivery; the publisher's own session counts apart."""
        w = self.w
        head = el[: el.find(b">")]
        if b"'error'" in head or b'"error"' in head:
            w.errors += 1
            if len(w.error_samples) < 5:
                w.error_samples.append(_error_sample(el))
            return
        i = el.find(b"<stamp")
        if i < 0:
            return  # another event (a retraction, a configuration change)
        i = el.find(b">", i) + 1
        fields = el[i : el.find(b"<", i)].split()
        role = self.pep
        assert role is not None
        if role.publisher is None:  # the publisher's own session (it has no caps)
            w.to_publisher += 1
            return
        if len(fields) != 3 or fields[0] != w.pep_tag:
            w.stale += 1
            return
        seq = int(fields[1])
        if seq == 0:
            role.ready = True
            return
        entry = w.pending.get(seq)
        if entry is None or self in entry[2]:
            w.duplicates += 1
            return
        entry[2].add(self)
        now = time.perf_counter_ns()
        w.received += 1
        if w.m0 <= now <= w.m1:
            w.in_window += 1
            w.lat.append((now - int(fields[2])) / 1000.0)
        entry[0] -= 1
        if entry[0] == 0:  # every contact has it: the publisher publishes its next one
            del w.pending[seq]
            if w.refill:
                entry[1].send_publish()

    def send_publish(self, prime: bool = False) -> None:
        """Publish to the bench node: the next item of the closed loop, or
        (``prime``) an item that only tells contacts the server notifies them."""
        w = self.w
        role = self.pep
        assert role is not None
        now = time.perf_counter_ns()
        if prime:
            w.primes += 1
            self.send(w.pep_publish % (b"prime%d" % w.primes, 0, now))
            return
        w.seq += 1
        w.sent += 1
        w.expected += role.size
        w.pending[w.seq] = [role.size, self, set()]  # the contacts that have it
        if w.m0 <= now <= w.m1:
            w.sent_in_window += 1
        self.send(w.pep_publish % (b"p%d" % w.seq, w.seq, now))

    async def close(self) -> None:
        if self.writer is None:
            return
        with contextlib.suppress(Exception):
            if not self.writer.is_closing():
                self.writer.write(CLOSE)
            self.writer.close()
        if self.task is not None:
            self.task.cancel()


class Occupancy:
    """One client's place in a group chat room: what it has seen of the join."""

    __slots__ = (
        "entered",
        "error",
        "iq_id",
        "iq_result",
        "joined",
        "nick",
        "post",
        "room",
        "roster",
        "size",
    )

    def __init__(self, room: bytes, nick: bytes, size: int) -> None:
        self.room = room  # the room's bare JID
        self.nick = nick
        self.size = size  # occupants the room will have (all of them ours)
        self.entered = False  # its own presence came back (status 110): it is in
        self.joined = False  # the subject arrived: the last stanza of a join
        self.roster: set[bytes] = set()  # nicknames present, from their presence
        self.error = ""
        self.iq_id = b""
        self.iq_result = False
        self.post = (
            b"<message to='%s' type='groupchat' id='g%%d'><body>%%d %%d</body></message>" % room
        )

    def join_stanza(self) -> bytes:
        """Enter the room (XEP-0045 7.2) and ask for no history (7.2.14)."""
        return (
            b"<presence to='%s/%s'><x xmlns='http://jabber.org/protocol/muc'>"
            b"<history maxstanzas='0'/></x></presence>" % (self.room, self.nick)
        )

    def configure_stanza(self, iq_id: bytes) -> bytes:
        """The owner accepts the default configuration: an instant room (10.1.2)."""
        self.iq_id, self.iq_result = iq_id, False
        return (
            b"<iq type='set' id='%s' to='%s'><query xmlns='http://jabber.org/protocol/muc#owner'>"
            b"<x xmlns='jabber:x:data' type='submit'/></query></iq>" % (iq_id, self.room)
        )

    def on_presence(self, el: bytes) -> None:
        frm = _attr(_ATTR_FROM_FULL, el)
        if frm is None or not frm.startswith(self.room + b"/"):
            return
        typ = _attr(_ATTR_TYPE, el)
        nick = frm[len(self.room) + 1 :]
        if typ == b"error":
            self.error = self.error or el[:300].decode(errors="replace")
        elif typ == b"unavailable":
            self.roster.discard(nick)
        else:
            self.roster.add(nick)
            if nick == self.nick:
                self.entered = True

    def on_iq(self, el: bytes) -> None:
        if self.iq_id and _attr(_ATTR_ID, el) == self.iq_id:
            if _attr(_ATTR_TYPE, el) == b"result":
                self.iq_result = True
            else:
                self.error = self.error or el[:300].decode(errors="replace")


class PepRole:
    """One client's part in the PEP scenario: a publisher (with its
    ``contacts``) or one of a publisher's contacts."""

    __slots__ = ("contacts", "publisher", "ready", "size")

    def __init__(self, size: int, publisher: Client | None = None) -> None:
        self.size = size  # the publisher's contacts: deliveries per publish
        self.publisher = publisher  # None: this client is the publisher
        self.contacts: list[Client] = []
        self.ready = False  # a contact: a notification of this phase arrived


def pep_specs(text: str, contacts: int = 0) -> list[tuple[int, int]]:
    """``"1x100,5x100"`` -> ``[(1, 100), (5, 100)]``: publishers x contacts of
    each. An entry may be the publishers alone (``"5"``), and ``contacts``
    (when not 0) sets the contacts of every phase."""
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        pubs, sep, size = part.lower().partition("x")
        if not pubs.isdigit() or (sep and not size.isdigit()) or (not sep and not contacts):
            raise ValueError(f"PEP spec {part!r}: expected PUBLISHERSxCONTACTS, such as 5x100")
        n = contacts or int(size)
        if int(pubs) < 1 or n < 1:
            raise ValueError(f"PEP spec {part!r}: at least 1 publisher with 1 contact")
        out.append((int(pubs), n))
    if not out:
        raise ValueError("no PEP spec")
    return out


def room_specs(text: str) -> list[tuple[int, int]]:
    """``"10x10,2x100"`` -> ``[(10, 10), (2, 100)]``: rooms x occupants per room."""
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        rooms, sep, size = part.lower().partition("x")
        if not sep or not rooms.isdigit() or not size.isdigit():
            raise ValueError(f"room spec {part!r}: expected ROOMSxOCCUPANTS, such as 10x10")
        if int(rooms) < 1 or int(size) < 2:
            raise ValueError(f"room spec {part!r}: at least 1 room of 2 occupants")
        out.append((int(rooms), int(size)))
    if not out:
        raise ValueError("no room spec")
    return out


# -------------------------------------------------------------------- worker


@dataclass
class Target:
    """Where clients connect. With several ``ports`` (a cluster's edges), client
    ``i`` of a login command goes to ``ports[i % len(ports)]``: clients are
    spread over the ports by index, so the two users of a pair (``2i``,
    ``2i+1``) land on different ports whenever there are two or more."""

    host: str
    port: int
    domain: str
    ports: tuple[int, ...] = ()

    def all_ports(self) -> tuple[int, ...]:
        return self.ports or (self.port,)


def _cpu() -> float:
    return time.process_time()


class Worker:
    """One process: holds clients and runs the coordinator's commands."""

    def __init__(self, conn: Connection, index: int, target: Target) -> None:
        self.conn = conn
        self.index = index
        self.target = target
        self.tls = _client_tls()
        self.clients: list[Client] = []
        self.early: list[tuple[Client, bytes]] = []
        self.closing = False
        self.dropped = 0
        # PEP: this phase's tag and publish template; caps queries answered
        self.pep_tag = b""
        self.pep_publish = b""
        self.disco_answered = 0
        self.disco_from: set[str] = set()
        self.reset_counters()

    def reset_counters(self) -> None:
        self.seq = 0
        self.sent = 0
        self.received = 0
        self.errors = 0
        self.in_window = 0
        self.presences = 0
        self.refill = False
        self.m0 = 0
        self.m1 = 0
        self.lat = array("d")
        # group chat: seq -> [occupants still to receive it, its sender]
        self.pending: dict[int, list[Any]] = {}
        self.expected = 0
        self.unexpected = 0
        self.sent_in_window = 0
        self.error_samples: list[str] = []
        # PEP: publish results, notifications of an earlier phase, primes
        # sent, a contact's second copy of a publish, the publisher's own copies
        self.acked = 0
        self.stale = 0
        self.primes = 0
        self.duplicates = 0
        self.to_publisher = 0

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        # a thread reads the pipe: registering its descriptor with the event
        # loop would make it non-blocking, and large replies would then fail
        def intake() -> None:
            while True:
                try:
                    cmd: dict[str, Any] | None = self.conn.recv()
                except (EOFError, OSError):
                    cmd = None
                loop.call_soon_threadsafe(commands.put_nowait, cmd)
                if cmd is None or cmd.get("op") == "exit":
                    return

        threading.Thread(target=intake, name="commands", daemon=True).start()
        while True:
            cmd = await commands.get()
            if cmd is None or cmd["op"] == "exit":
                await self.op_close()
                return
            cpu0 = _cpu()
            try:
                out = await getattr(self, "op_" + cmd.pop("op"))(**cmd)
            except Exception as exc:  # reported to the coordinator, which raises
                out = {"error": f"{type(exc).__name__}: {exc}"}
            out["cpu_s"] = _cpu() - cpu0
            out["worker"] = self.index
            self.conn.send(out)

    async def op_login(
        self,
        users: Sequence[tuple[str, str]],
        mech: str,
        concurrency: int,
        resource: str,
        roster: bool = False,
        expect: Sequence[int] | None = None,
        timeout: float = 120.0,
        pairs: bool = False,
        ports: Sequence[int] | None = None,
        caps: bool = False,
    ) -> dict[str, Any]:
        """Log ``users`` in, at most ``concurrency`` at a time; keep them connected.

        ``ports[i]`` is the port of ``users[i]`` (default: the target's port).
        With ``caps``, the initial presence announces the client's entity
        capabilities (XEP-0115), which ask for the bench PEP node's
        notifications."""
        presence = CAPS_PRESENCE if caps else b"<presence/>"
        self.closing = False
        self.dropped = 0
        self.early.clear()
        sem = asyncio.Semaphore(concurrency)
        lat = array("d")
        failures: list[str] = []
        t = self.target
        new: list[Client | None] = [None] * len(users)

        async def one(i: int, user: str, password: str) -> None:
            async with sem:
                c = Client(self, user, password, resource)
                if expect is not None:
                    c.seen = set()
                    c.expect = expect[i]
                t0 = time.perf_counter()
                port = ports[i] if ports else t.port
                try:
                    await asyncio.wait_for(
                        c.login(t.host, port, t.domain, mech, roster, presence), timeout
                    )
                except Exception as exc:
                    failures.append(f"{user}: {type(exc).__name__}: {exc}"[:300])
                    await c.close()
                    return
                lat.append(time.perf_counter() - t0)
                new[i] = c
                c.start_reading()

        start = time.monotonic()
        await asyncio.gather(*(one(i, u, p) for i, (u, p) in enumerate(users)))
        end = time.monotonic()
        for c, el in self.early:
            c.on_element(el)
        self.early.clear()
        ok = [c for c in new if c is not None]
        if pairs:  # users[2i] and users[2i+1] talk to each other
            for a, b in zip(new[0::2], new[1::2], strict=False):
                if a is not None and b is not None:
                    a.partner, b.partner = b, a
                    for x, y in ((a, b), (b, a)):
                        x.to_partner = (
                            b"<message to='%s' type='chat' id='%%d'><body>%%d %%d</body></message>"
                            % _escape(y.full_jid.decode()).encode()
                        )
        self.clients.extend(ok)
        return {
            "ok": len(ok),
            "failed": len(failures),
            "failures": failures[:5],
            "lat": lat.tobytes(),
            "start": start,
            "end": end,
        }

    async def op_messages(
        self,
        mode: str,
        t_start: float,
        warmup: float,
        duration: float,
        window: int = 4,
        rate: float = 0.0,
        drain: float = 10.0,
    ) -> dict[str, Any]:
        """Run the message phase; ``t_start`` is a monotonic time shared with the coordinator."""
        self.reset_counters()
        senders = [c for c in self.clients if c.partner is not None]
        for c in senders:
            c.inflight = 0
        # perf_counter_ns and monotonic are the same clock on Linux
        offset = time.perf_counter_ns() - time.monotonic_ns()
        self.m0 = int((t_start + warmup) * 1e9) + offset
        self.m1 = self.m0 + int(duration * 1e9)
        end = t_start + warmup + duration
        await asyncio.sleep(max(0.0, t_start - time.monotonic()))
        cpu_w0 = cpu_w1 = _cpu()
        if senders and mode == "prime":  # one message per sender, every latency kept
            self.m0, self.m1 = 0, 2**62
            for c in senders:
                c.send_message()
        elif senders and mode == "closed":
            self.refill = True
            for c in senders:
                for _ in range(window):
                    c.send_message()
            await asyncio.sleep(max(0.0, t_start + warmup - time.monotonic()))
            cpu_w0 = _cpu()
            await asyncio.sleep(max(0.0, end - time.monotonic()))
            cpu_w1 = _cpu()
            self.refill = False
        elif senders:
            n = len(senders)
            i = 0
            t0 = time.monotonic()
            w0 = t0 + warmup
            cpu_w0 = -1.0
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                if cpu_w0 < 0 and now >= w0:
                    cpu_w0 = _cpu()
                due = int((now - t0) * rate)
                while self.sent < due:
                    senders[i % n].send_message()
                    i += 1
                await asyncio.sleep(0.002)
            cpu_w1 = _cpu()
            cpu_w0 = cpu_w1 if cpu_w0 < 0 else cpu_w0
        sent_by_end = self.sent
        # drain: wait while replies still arrive; give up after ``drain`` seconds
        # without progress (what is missing then is lost) or 6 x ``drain`` in all
        t_end = time.monotonic()
        deadline, cap, seen = t_end + drain, t_end + 6 * drain, -1
        while self.received + self.errors < self.sent and time.monotonic() < deadline:
            if self.received + self.errors != seen:
                seen = self.received + self.errors
                deadline = min(cap, time.monotonic() + drain)
            await asyncio.sleep(0.02)
        return {
            "sent": self.sent,
            "sent_by_end": sent_by_end,
            "drain_s": time.monotonic() - t_end,
            "received": self.received,
            "in_window": self.in_window,
            "errors": self.errors,
            "lost": self.sent - self.received,
            "dropped": self.dropped,
            "lat": self.lat.tobytes(),
            "window_cpu_s": cpu_w1 - cpu_w0,
        }

    async def op_muc_join(
        self, rooms: Sequence[str], size: int, concurrency: int, timeout: float
    ) -> dict[str, Any]:
        """Put this worker's clients, ``size`` at a time in order, into ``rooms``.

        Per room: the first client joins (creating the room, locked), accepts
        the default configuration (an instant room) and waits for the result;
        then the others join, at most ``concurrency`` at a time over all rooms,
        each in once its own presence (status 110) comes back. The room is
        ready when every occupant has seen all ``size`` present; then each
        should have the room's subject, the last stanza of a join (XEP-0045
        7.2.15): those still without it after 5 s are counted."""
        clients = self.clients
        if len(clients) != len(rooms) * size:
            raise RuntimeError(f"{len(clients)} clients for {len(rooms)} rooms of {size}")
        sem = asyncio.Semaphore(max(1, concurrency))
        deadline = time.monotonic() + timeout
        lat = array("d")
        failures: list[str] = []

        async def until(cond: Callable[[], bool], occ: Occupancy, what: str) -> None:
            while not cond():
                if occ.error:
                    raise LoginError(f"{what}: {occ.error}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{what}: no answer within {timeout:.0f}s")
                await asyncio.sleep(0.005)

        async def enter(c: Client) -> None:
            occ = c.muc
            assert occ is not None
            async with sem:
                t0 = time.perf_counter()
                c.send(occ.join_stanza())
                await until(lambda: occ.entered, occ, f"{c.user} joining {occ.room.decode()}")
                lat.append(time.perf_counter() - t0)

        def everyone(occ: Occupancy) -> Callable[[], bool]:
            return lambda: len(occ.roster) >= size

        async def room(name: str, members: list[Client]) -> None:
            jid = name.encode()
            for k, c in enumerate(members):
                c.muc = Occupancy(jid, b"n%d" % k, size)
            try:
                owner = members[0]
                await enter(owner)
                occ = owner.muc
                assert occ is not None
                owner.send(occ.configure_stanza(b"cfg-" + jid))
                await until(lambda: occ.iq_result, occ, f"configuring {name}")
                await asyncio.gather(*(enter(c) for c in members[1:]))
                for c in members:
                    assert c.muc is not None
                    await until(everyone(c.muc), c.muc, f"{c.user} in {name}")
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}"[:400])

        t0 = time.monotonic()
        await asyncio.gather(
            *(room(r, clients[i * size : (i + 1) * size]) for i, r in enumerate(rooms))
        )
        wall = time.monotonic() - t0
        subject_by = time.monotonic() + 5.0
        while time.monotonic() < subject_by and not all(  # noqa: ASYNC110
            c.muc is None or c.muc.joined for c in clients
        ):
            await asyncio.sleep(0.02)
        return {
            "rooms": len(rooms),
            "entered": sum(1 for c in clients if c.muc is not None and c.muc.entered),
            "missing_subjects": sum(1 for c in clients if c.muc is not None and not c.muc.joined),
            "failures": failures[:5],
            "lat": lat.tobytes(),
            "wall_s": wall,
            "presences": sum(c.presences for c in clients),
        }

    async def op_muc_loop(
        self,
        t_start: float,
        warmup: float,
        duration: float,
        senders: int,
        window: int,
        drain: float = 10.0,
    ) -> dict[str, Any]:
        """The closed loop: the first ``senders`` occupants of each room keep
        ``window`` messages each in flight, and post the next one when every
        occupant (themselves included: the room echoes) has received one."""
        self.reset_counters()
        posting: list[Client] = []
        by_room: dict[bytes, list[Client]] = {}
        for c in self.clients:
            if c.muc is not None:
                by_room.setdefault(c.muc.room, []).append(c)
        for members in by_room.values():
            posting.extend(members[:senders])
        offset = time.perf_counter_ns() - time.monotonic_ns()
        self.m0 = int((t_start + warmup) * 1e9) + offset
        self.m1 = self.m0 + int(duration * 1e9)
        end = t_start + warmup + duration
        await asyncio.sleep(max(0.0, t_start - time.monotonic()))
        cpu_w0 = cpu_w1 = _cpu()
        if posting:
            self.refill = True
            for _ in range(window):
                for c in posting:
                    c.send_groupchat()
            await asyncio.sleep(max(0.0, t_start + warmup - time.monotonic()))
            cpu_w0 = _cpu()
            await asyncio.sleep(max(0.0, end - time.monotonic()))
            cpu_w1 = _cpu()
            self.refill = False
        t_end = time.monotonic()
        deadline, cap, seen = t_end + drain, t_end + 6 * drain, -1
        while self.pending and time.monotonic() < deadline:
            if self.received != seen:
                seen = self.received
                deadline = min(cap, time.monotonic() + drain)
            await asyncio.sleep(0.02)
        return {
            "posting": len(posting),
            "sent": self.sent,
            "sent_in_window": self.sent_in_window,
            "expected": self.expected,
            "received": self.received,
            "in_window": self.in_window,
            "incomplete": len(self.pending),
            "unexpected": self.unexpected,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "dropped": self.dropped,
            "drain_s": time.monotonic() - t_end,
            "lat": self.lat.tobytes(),
            "window_cpu_s": cpu_w1 - cpu_w0,
        }

    async def op_pep_prime(
        self,
        stars: Sequence[tuple[str, Sequence[str]]],
        tag: str,
        timeout: float,
        interval: float = 1.0,
    ) -> dict[str, Any]:
        """Give this worker's clients their PEP roles (``stars``: each
        publisher's user and its contacts' users), then have each publisher
        publish a prime item every ``interval`` seconds until every one of its
        contacts has received one: the server has then learnt each contact's
        capabilities (it asks once per ``ver``) and notifies it."""
        self.reset_counters()
        self.pep_tag = tag.encode()
        self.pep_publish = pep_publish_template(tag)
        by_user = {c.user: c for c in self.clients}
        pubs: list[Client] = []
        for pub_user, contact_users in stars:
            pub = by_user[pub_user]
            contacts = [by_user[u] for u in contact_users]
            pub.pep = PepRole(len(contacts))
            pub.pep.contacts = contacts
            for c in contacts:
                c.pep = PepRole(len(contacts), pub)
            pubs.append(pub)

        def ready(c: Client) -> bool:
            return c.pep is not None and c.pep.ready

        def waiting() -> list[Client]:
            return [p for p in pubs if p.pep and not all(map(ready, p.pep.contacts))]

        t0 = time.monotonic()
        deadline = t0 + timeout
        next_at = t0
        left = waiting()
        while left and time.monotonic() < deadline:
            if time.monotonic() >= next_at:
                for p in left:
                    p.send_publish(prime=True)
                next_at = time.monotonic() + interval
            await asyncio.sleep(0.005)
            left = waiting()
        contacts = [c for p in pubs if p.pep for c in p.pep.contacts]
        return {
            "publishers": len(pubs),
            "contacts": len(contacts),
            "ready": sum(1 for c in contacts if ready(c)),
            "wall_s": time.monotonic() - t0,
            "primes": self.primes,
            "acked": self.acked,
            "stale": self.stale,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "disco_answered": self.disco_answered,
            "disco_from": sorted(self.disco_from),
        }

    async def op_pep_loop(
        self, t_start: float, warmup: float, duration: float, window: int, drain: float = 10.0
    ) -> dict[str, Any]:
        """The closed loop: every publisher keeps ``window`` publishes in
        flight, and publishes the next one when all its contacts have
        received the notification of one."""
        self.reset_counters()
        pubs = [c for c in self.clients if c.pep is not None and c.pep.publisher is None]
        offset = time.perf_counter_ns() - time.monotonic_ns()
        self.m0 = int((t_start + warmup) * 1e9) + offset
        self.m1 = self.m0 + int(duration * 1e9)
        end = t_start + warmup + duration
        await asyncio.sleep(max(0.0, t_start - time.monotonic()))
        cpu_w0 = cpu_w1 = _cpu()
        if pubs:
            self.refill = True
            for _ in range(window):
                for p in pubs:
                    p.send_publish()
            await asyncio.sleep(max(0.0, t_start + warmup - time.monotonic()))
            cpu_w0 = _cpu()
            await asyncio.sleep(max(0.0, end - time.monotonic()))
            cpu_w1 = _cpu()
            self.refill = False
        t_end = time.monotonic()
        deadline, cap, seen = t_end + drain, t_end + 6 * drain, -1

        def busy() -> bool:
            return bool(self.pending) or self.acked + self.errors < self.sent

        while busy() and time.monotonic() < deadline:
            if self.received + self.acked != seen:
                seen = self.received + self.acked
                deadline = min(cap, time.monotonic() + drain)
            await asyncio.sleep(0.02)
        return {
            "publishers": len(pubs),
            "sent": self.sent,
            "sent_in_window": self.sent_in_window,
            "acked": self.acked,
            "expected": self.expected,
            "received": self.received,
            "in_window": self.in_window,
            "incomplete": len(self.pending),
            "duplicates": self.duplicates,
            "to_publisher": self.to_publisher,
            "stale": self.stale,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "dropped": self.dropped,
            "drain_s": time.monotonic() - t_end,
            "lat": self.lat.tobytes(),
            "window_cpu_s": cpu_w1 - cpu_w0,
            "disco_answered": self.disco_answered,
            "disco_from": sorted(self.disco_from),
        }

    async def op_wait_presence(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        tracked = [c for c in self.clients if c.seen is not None]
        while time.monotonic() < deadline and any(not c.complete_at for c in tracked):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        done = [c.complete_at for c in tracked if c.complete_at]
        return {
            "presences": sum(c.presences for c in tracked),
            "complete": len(done),
            "incomplete": len(tracked) - len(done),
            "last_complete": max(done) if done else 0.0,
            "missing": sum(max(0, c.expect - len(c.seen or ())) for c in tracked),
        }

    async def op_close(self) -> dict[str, Any]:
        self.closing = True
        self.disco_answered = 0
        self.disco_from = set()
        clients, self.clients = self.clients, []
        for c in clients:
            await c.close()
        await asyncio.sleep(0.05)
        return {"closed": len(clients)}

    async def op_ping(self) -> dict[str, Any]:
        return {"pong": True, "connections": len(self.clients)}


def _worker_main(conn: Connection, index: int, target: Target) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator stops us
    raise_nofile()
    worker = Worker(conn, index, target)
    try:
        import uvloop
    except ImportError:
        asyncio.run(worker.serve())
    else:
        uvloop.run(worker.serve())


def raise_nofile(want: int = 65536) -> int:
    """Raise the open-files limit as far as allowed; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if new > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------- coordinator


class LoadGen:
    """Starts ``workers`` processes and sends them commands (one at a time)."""

    def __init__(self, target: Target, workers: int = 2) -> None:
        self.target = target
        self.n = max(1, workers)
        self.procs: list[Any] = []
        self.conns: list[Connection] = []

    def __enter__(self) -> LoadGen:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        ctx = mp.get_context("fork")
        for i in range(self.n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(child, i, self.target), daemon=True)
            p.start()
            child.close()
            self.procs.append(p)
            self.conns.append(parent)
        self.call_all([{"op": "ping"}] * self.n, timeout=30)

    def alive(self) -> bool:
        return bool(self.procs) and all(p.is_alive() for p in self.procs)

    def restart(self) -> None:
        """Replace the workers (after one died); their clients are gone."""
        self.stop()
        self.start()

    def stop(self) -> None:
        for c in self.conns:
            with contextlib.suppress(Exception):
                c.send({"op": "exit"})
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)
        self.procs, self.conns = [], []

    def call_all(
        self, cmds: Sequence[dict[str, Any]], timeout: float = 600
    ) -> list[dict[str, Any]]:
        """Send one command per worker; wait for every reply."""
        for conn, cmd in zip(self.conns, cmds, strict=True):
            conn.send(dict(cmd))
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        for conn, p in zip(self.conns, self.procs, strict=True):
            while not conn.poll(0.2):
                if not p.is_alive():
                    raise RuntimeError(f"load generator worker {p.pid} died")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"load generator worker {p.pid} did not answer")
            out.append(conn.recv())
        errors = [r["error"] for r in out if "error" in r]
        if errors:
            raise RuntimeError("load generator: " + "; ".join(errors))
        return out

    def split(self, items: Sequence[Any], group: int = 1) -> list[list[Any]]:
        """Deal ``items`` to workers round-robin, in groups kept together (pairs)."""
        parts: list[list[Any]] = [[] for _ in range(self.n)]
        for k in range(0, len(items), group):
            parts[(k // group) % self.n].extend(items[k : k + group])
        return parts

    def login(
        self,
        users: Sequence[tuple[str, str]],
        mech: str,
        concurrency: int,
        resource: str,
        *,
        roster: bool = False,
        expect: Sequence[int] | None = None,
        pairs: bool = False,
        timeout: float = 120.0,
        ports: Sequence[int] | None = None,
        group: int = 0,
        caps: bool = False,
    ) -> dict[str, Any]:
        """Log ``users`` in over the workers; user ``i`` connects to
        ``ports[i % len(ports)]`` (default: the target's ports). ``group``
        users in a row stay on one worker (a pair, a room's occupants)."""
        idx = list(range(len(users)))
        parts = self.split(idx, group or (2 if pairs else 1))
        per = max(1, concurrency // self.n)
        spread = tuple(ports) if ports else self.target.all_ports()
        cmds = [
            {
                "op": "login",
                "users": [users[i] for i in part],
                "ports": [spread[i % len(spread)] for i in part],
                "mech": mech,
                "concurrency": per,
                "resource": resource,
                "roster": roster,
                "expect": None if expect is None else [expect[i] for i in part],
                "pairs": pairs,
                "timeout": timeout,
                "caps": caps,
            }
            for part in parts
        ]
        replies = self.call_all(cmds, timeout=timeout + 60 + len(users) / 5)
        lat = array("d")
        for r in replies:
            lat.frombytes(r["lat"])
        return {
            "ok": sum(r["ok"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "failures": [f for r in replies for f in r["failures"]][:5],
            "lat": lat,
            "start": min(r["start"] for r in replies),
            "end": max(r["end"] for r in replies),
            "cpu_s": sum(r["cpu_s"] for r in replies),
        }

    def close_all(self) -> float:
        return sum(r["cpu_s"] for r in self.call_all([{"op": "close"}] * self.n))


# ------------------------------------------------------------ server probing


_CLK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[bytes] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # the command name may contain spaces: split after its closing parenthesis
    return raw[raw.rfind(b")") + 2 :].split()


class ProcTree:
    """CPU time and resident memory of a process and all its descendants."""

    def __init__(self, root: int) -> None:
        self.root = root

    def pids(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                st = _stat(int(d))
                if st is not None:
                    children.setdefault(int(st[1]), []).append(int(d))
        out, todo = [], [self.root]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, ()))
        return out

    def cpu(self) -> float:
        """utime + stime (+ reaped children's) of the tree, seconds."""
        ticks = 0
        for pid in self.pids():
            st = _stat(pid)
            if st is not None:
                # fields 14-17 of /proc/PID/stat: utime stime cutime cstime
                ticks += int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
        return ticks / _CLK

    def rss(self) -> int:
        """Resident set size of the tree, bytes."""
        total = 0
        for pid in self.pids():
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
            except (OSError, IndexError, ValueError):
                pass
        return total


#: every process on the machine: pid -> (command name, /proc/PID/stat fields after it)
ProcTable = dict[int, tuple[bytes, list[bytes]]]
#: picks the pids of one group from a :data:`ProcTable`
Finder = Callable[[ProcTable], Iterable[int]]


def scan_procs() -> ProcTable:
    out: ProcTable = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                raw = Path(f"/proc/{d}/stat").read_bytes()
            except OSError:
                continue
            close = raw.rfind(b")")
            out[int(d)] = (raw[raw.find(b"(") + 1 : close], raw[close + 2 :].split())
    return out


def tree(root: int) -> Finder:
    """A process and all its descendants."""

    def find(table: ProcTable) -> list[int]:
        children: dict[int, list[int]] = {}
        for pid, (_comm, st) in table.items():
            children.setdefault(int(st[1]), []).append(pid)
        out, todo = [], [root] if root in table else []
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, ()))
        return out

    return find


def named(comm: str, cmdline_has: str | None = None) -> Finder:
    """Processes whose command name is ``comm`` (and whose command line, as the
    process shows it, contains ``cmdline_has``: PostgreSQL backends show
    ``postgres: CLUSTER: USER DATABASE HOST(PORT) STATE``)."""
    want = comm.encode()[:15]  # the kernel keeps 15 characters of the name

    def find(table: ProcTable) -> list[int]:
        out = []
        for pid, (c, _st) in table.items():
            if c != want:
                continue
            if cmdline_has is not None:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                if cmdline_has.encode() not in cmd:
                    continue
            out.append(pid)
        return out

    return find


class ProcSet:
    """CPU time and resident memory summed over named groups of processes.

    The cluster's probe: one group per cluster process, plus shared servers
    it uses (Redis, its PostgreSQL backends), found afresh at every reading so
    processes that come and go (database backends) are followed. CPU is
    ``utime + stime`` accumulated per process between readings: a process
    that appears counts from its start, one that exits keeps what was seen of
    it. Children's CPU (``cutime``) is left out, unlike :class:`ProcTree`, so
    a reaped child is never counted twice. ``memory`` names the groups whose
    RSS counts (default: all).
    """

    def __init__(self, groups: dict[str, Finder], memory: Iterable[str] | None = None) -> None:
        self.groups = groups
        self.memory = set(groups) if memory is None else set(memory)
        self._seen: dict[tuple[str, int, bytes], int] = {}
        self._acc = dict.fromkeys(groups, 0)

    def pids(self, table: ProcTable | None = None) -> dict[str, list[int]]:
        table = scan_procs() if table is None else table
        return {g: sorted(set(find(table))) for g, find in self.groups.items()}

    def parts(self) -> dict[str, float]:
        """CPU seconds per group (a running total: use differences)."""
        table = scan_procs()
        seen: dict[tuple[str, int, bytes], int] = {}
        for g, pids in self.pids(table).items():
            for pid in pids:
                st = table[pid][1]
                ticks = int(st[11]) + int(st[12])
                key = (g, pid, st[19])  # the start time tells a reused pid apart
                self._acc[g] += max(0, ticks - self._seen.get(key, 0))
                seen[key] = ticks
        self._seen = seen
        return {g: n / _CLK for g, n in self._acc.items()}

    def cpu(self) -> float:
        return sum(self.parts().values())

    def rss_parts(self) -> dict[str, int]:
        """Resident set size per group (the ``memory`` groups), bytes."""
        out = {}
        for g, pids in self.pids().items():
            if g not in self.memory:
                continue
            out[g] = 0
            for pid in pids:
                try:
                    out[g] += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
                except (OSError, IndexError, ValueError):
                    pass
        return out

    def rss(self) -> int:
        return sum(self.rss_parts().values())


#: what the scenarios measure the server with
Probe = ProcTree | ProcSet


def _server_cpu(probe: Probe) -> tuple[float, dict[str, float]]:
    """Server CPU seconds so far, and per part when the probe has parts."""
    if isinstance(probe, ProcSet):
        p = probe.parts()
        return sum(p.values()), p
    return probe.cpu(), {}


def _server_rss(probe: Probe) -> tuple[int, dict[str, int]]:
    if isinstance(probe, ProcSet):
        p = probe.rss_parts()
        return sum(p.values()), p
    return probe.rss(), {}


def _diff(a: Mapping[str, float], b: Mapping[str, float], scale: float = 1.0) -> dict[str, float]:
    return {k: _r((b[k] - a.get(k, 0.0)) * scale, 3) for k in b}


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy since boot, all cores together."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f) - f[3] - (f[4] if len(f) > 4 else 0)) / _CLK


def own_cpu() -> float:
    """This process's CPU time (the coordinator's share of the load generator)."""
    return time.process_time()


# ---------------------------------------------------------------- statistics


def percentiles(
    values: Iterable[float], ps: Sequence[float] = (50, 90, 99, 99.9)
) -> dict[str, float]:
    v = sorted(values)
    if not v:
        return {f"p{p:g}": 0.0 for p in ps} | {"max": 0.0}
    out = {f"p{p:g}": v[min(len(v) - 1, int(len(v) * p / 100))] for p in ps}
    out["max"] = v[-1]
    return out


def _r(x: float, nd: int = 2) -> float:
    return round(float(x), nd)


def _settle(seconds: float, probe: Probe | None = None, quiet: float = 0.1) -> None:
    """Let the server finish what the previous phase left (closing sessions):
    ``seconds`` at least, then until the server uses under ``quiet`` of a core
    over half a second (30 s at most). A fixed pause was not enough for the
    cluster: ending 2,000 idle sessions (unbind, presence, last activity over
    gRPC) ran into the next scenario's measurement."""
    time.sleep(seconds)
    if probe is None:
        return
    deadline = time.monotonic() + 30.0
    before = _server_cpu(probe)[0]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _server_cpu(probe)[0]
        if now - before < quiet * 0.5:
            return
        before = now


# ----------------------------------------------------------------- scenarios


def login_storm(
    lg: LoadGen,
    probe: Probe,
    users: Sequence[tuple[str, str]],
    mech: str = "SCRAM-SHA-1",
    concurrency: int = 50,
    *,
    settle: float = 1.0,
) -> dict[str, Any]:
    """Connect + STARTTLS + SASL + bind + initial presence for every user."""
    _settle(settle, probe)
    (cpu0, parts0), own0, busy0 = _server_cpu(probe), own_cpu(), machine_busy()
    r = lg.login(users, mech, concurrency, "lg-login")
    (cpu1, parts1), own1, busy1 = _server_cpu(probe), own_cpu(), machine_busy()
    wall = max(1e-9, r["end"] - r["start"])
    lat = percentiles(x * 1000 for x in r["lat"])
    close_cpu = lg.close_all()
    lg_cpu = r["cpu_s"] + own1 - own0
    out = {
        "scenario": "login",
        "clients": len(users),
        "mech": mech,
        "concurrency": concurrency,
        "ok": r["ok"],
        "failed": r["failed"],
        "failures": r["failures"],
        "wall_s": _r(wall, 3),
        "logins_per_s": _r(r["ok"] / wall, 1),
        "latency_ms": {k: _r(v) for k, v in lat.items()},
        "server_cpu_s": _r(cpu1 - cpu0),
        "server_cpu_ms_per_login": _r((cpu1 - cpu0) * 1000 / max(1, r["ok"])),
        "loadgen_cpu_s": _r(lg_cpu),
        "loadgen_cores": _r(lg_cpu / wall),
        "loadgen_close_cpu_s": _r(close_cpu),
        "machine_busy_cores": _r((busy1 - busy0) / wall),
    }
    if parts1:
        out["server_cpu_parts_s"] = _diff(parts0, parts1)
    return out


@dataclass
class _Window:
    """What the workers sent back from a measured phase, and the CPU
    counters read at the start and the end of its measured window."""

    replies: list[dict[str, Any]]
    lat: array[float]
    cpu0: float
    cpu1: float
    parts0: Any
    parts1: Any
    own0: float
    own1: float
    busy0: float
    busy1: float


def _measured(
    lg: LoadGen,
    probe: Probe,
    cmd: dict[str, Any],
    t_start: float,
    warmup: float,
    duration: float,
    drain: float,
    what: str,
) -> _Window:
    """Start ``cmd`` on every worker, read the CPU counters over the
    measured window, then collect the workers' replies and latencies."""
    for conn in lg.conns:
        conn.send(dict(cmd))
    time.sleep(max(0.0, t_start + warmup - time.monotonic()))
    (cpu0, parts0), own0, busy0 = _server_cpu(probe), own_cpu(), machine_busy()
    time.sleep(max(0.0, t_start + warmup + duration - time.monotonic()))
    (cpu1, parts1), own1, busy1 = _server_cpu(probe), own_cpu(), machine_busy()
    replies = []
    for conn in lg.conns:
        if not conn.poll(warmup + duration + 6 * drain + 120):
            raise TimeoutError(f"load generator worker did not finish the {what}")
        replies.append(conn.recv())
    errors = [r["error"] for r in replies if "error" in r]
    if errors:
        raise RuntimeError("load generator: " + "; ".join(errors))
    lat = array("d")
    for r in replies:
        lat.frombytes(r["lat"])
    return _Window(replies, lat, cpu0, cpu1, parts0, parts1, own0, own1, busy0, busy1)


def _message_phase(
    lg: LoadGen,
    probe: Probe,
    mode: str,
    warmup: float,
    duration: float,
    window: int,
    rate: float,
    drain: float,
) -> dict[str, Any]:
    """One phase on every worker at once; server CPU measured over the same window."""
    t_start = time.monotonic() + 0.3
    cmd = {
        "op": "messages",
        "mode": mode,
        "t_start": t_start,
        "warmup": warmup,
        "duration": duration,
        "window": window,
        "rate": rate / lg.n,
        "drain": drain,
    }
    w = _measured(lg, probe, cmd, t_start, warmup, duration, drain, "message phase")
    replies, lat = w.replies, w.lat
    cpu0, cpu1, parts0, parts1 = w.cpu0, w.cpu1, w.parts0, w.parts1
    own0, own1, busy0, busy1 = w.own0, w.own1, w.busy0, w.busy1
    pct = {k: _r(v / 1000, 3) for k, v in percentiles(lat).items()}
    out: dict[str, Any] = {
        "mode": mode,
        "sent": sum(r["sent"] for r in replies),
        "delivered": sum(r["received"] for r in replies),
        "lost": sum(r["lost"] for r in replies),
        "errors": sum(r["errors"] for r in replies),
        "dropped_connections": sum(r["dropped"] for r in replies),
        "drain_s": _r(max(r["drain_s"] for r in replies)),
        "latency_ms": pct,
    }
    if mode == "prime":
        out["wall_s"] = _r(max(0.0, time.monotonic() - t_start), 2)
        return out
    in_window = sum(r["in_window"] for r in replies)
    lg_cpu = sum(r["window_cpu_s"] for r in replies) + own1 - own0
    out.update(
        {
            "warmup_s": warmup,
            "duration_s": duration,
            "delivered_in_window": in_window,
            "msgs_per_s": _r(in_window / duration, 1),
            "server_cpu_s": _r(cpu1 - cpu0),
            "server_cores": _r((cpu1 - cpu0) / duration),
            "server_cpu_us_per_msg": _r((cpu1 - cpu0) * 1e6 / max(1, in_window), 1),
            "loadgen_cpu_s": _r(lg_cpu),
            "loadgen_cores": _r(lg_cpu / duration),
            "machine_busy_cores": _r((busy1 - busy0) / duration),
        }
    )
    if parts1:
        out["server_cpu_parts_s"] = _diff(parts0, parts1)
    if mode == "closed":
        out["window_per_direction"] = window
    else:
        out["target_rate"] = rate
    return out


def messages(
    lg: LoadGen,
    probe: Probe,
    users: Sequence[tuple[str, str]],
    mech: str = "PLAIN",
    *,
    concurrency: int = 50,
    window: int = 4,
    closed_s: float = 20.0,
    rate: float = 1000.0,
    rate_s: float = 15.0,
    warmup: float = 2.0,
    drain: float = 10.0,
    settle: float = 1.0,
) -> dict[str, Any]:
    """Clients in pairs. First every client sends its partner one message and
    all are awaited (first-message latency: per-user caches warm up here);
    then a closed-loop phase, then a fixed-rate phase on the same sessions."""
    _settle(settle, probe)
    r = lg.login(users, mech, concurrency, "lg-msg", pairs=True)
    out: dict[str, Any] = {
        "scenario": "messages",
        "clients": len(users),
        "pairs": len(users) // 2,
        "mech": mech,
        "logged_in": r["ok"],
        "login_failed": r["failed"],
        "failures": r["failures"],
    }
    if r["failed"]:
        lg.close_all()
        return out
    out["first_message"] = _message_phase(lg, probe, "prime", 0.0, 0.0, 1, 0.0, 30.0)
    if closed_s > 0:
        out["closed"] = _message_phase(lg, probe, "closed", warmup, closed_s, window, 0.0, drain)
    if rate_s > 0 and rate > 0:
        _settle(settle, probe)
        out["rate"] = _message_phase(lg, probe, "rate", warmup, rate_s, window, rate, drain)
    lg.close_all()
    return out


def idle(
    lg: LoadGen,
    probe: Probe,
    users: Sequence[tuple[str, str]],
    mech: str = "PLAIN",
    *,
    concurrency: int = 50,
    hold_s: float = 5.0,
    settle: float = 2.0,
) -> dict[str, Any]:
    """Hold C sessions; server RSS delta per connection and idle CPU."""
    _settle(settle, probe)
    rss0, mem0 = _server_rss(probe)
    r = lg.login(users, mech, concurrency, "lg-idle")
    _settle(settle, probe)
    cpu0, parts0 = _server_cpu(probe)
    time.sleep(hold_s)
    cpu1, parts1 = _server_cpu(probe)
    rss1, mem1 = _server_rss(probe)
    lg.close_all()
    out = {
        "scenario": "idle",
        "connections": len(users),
        "mech": mech,
        "ok": r["ok"],
        "failed": r["failed"],
        "failures": r["failures"],
        "login_wall_s": _r(r["end"] - r["start"]),
        "rss_before_mb": _r(rss0 / 2**20, 1),
        "rss_after_mb": _r(rss1 / 2**20, 1),
        "kb_per_connection": _r((rss1 - rss0) / 1024 / max(1, r["ok"]), 1),
        "idle_server_cpu_pct": _r((cpu1 - cpu0) * 100 / hold_s, 1),
        "loadgen_cpu_s": _r(r["cpu_s"]),
    }
    if mem1:
        out["kb_per_connection_parts"] = _diff(mem0, mem1, 1 / 1024 / max(1, r["ok"]))
        out["idle_server_cpu_pct_parts"] = _diff(parts0, parts1, 100 / hold_s)
    return out


def login_hold(
    lg: LoadGen,
    probe: Probe,
    users: Sequence[tuple[str, str]],
    mech: str = "SCRAM-SHA-1",
    concurrency: int = 50,
    *,
    ports: Sequence[int] | None = None,
    hold_s: float = 3.0,
    settle: float = 2.0,
) -> dict[str, Any]:
    """A login storm whose sessions stay connected: logins/s, login latency and
    server CPU per login, then memory per connection and idle CPU with all of
    them held. The edge-scaling scenario runs it with the same users on one
    edge, then spread over two (``ports``)."""
    _settle(settle, probe)
    rss0, mem0 = _server_rss(probe)
    (cpu0, parts0), own0, busy0 = _server_cpu(probe), own_cpu(), machine_busy()
    r = lg.login(users, mech, concurrency, "lg-hold", ports=ports)
    (cpu1, parts1), own1, busy1 = _server_cpu(probe), own_cpu(), machine_busy()
    wall = max(1e-9, r["end"] - r["start"])
    _settle(settle, probe)
    cpu2, parts2 = _server_cpu(probe)
    time.sleep(hold_s)
    cpu3, parts3 = _server_cpu(probe)
    rss1, mem1 = _server_rss(probe)
    close_cpu = lg.close_all()
    lat = percentiles(x * 1000 for x in r["lat"])
    lg_cpu = r["cpu_s"] + own1 - own0
    out: dict[str, Any] = {
        "clients": len(users),
        "ports": list(ports or lg.target.all_ports()),
        "mech": mech,
        "concurrency": concurrency,
        "ok": r["ok"],
        "failed": r["failed"],
        "failures": r["failures"],
        "wall_s": _r(wall, 3),
        "logins_per_s": _r(r["ok"] / wall, 1),
        "latency_ms": {k: _r(v) for k, v in lat.items()},
        "server_cpu_s": _r(cpu1 - cpu0),
        "server_cpu_ms_per_login": _r((cpu1 - cpu0) * 1000 / max(1, r["ok"])),
        "server_cores": _r((cpu1 - cpu0) / wall),
        "loadgen_cpu_s": _r(lg_cpu),
        "loadgen_cores": _r(lg_cpu / wall),
        "loadgen_close_cpu_s": _r(close_cpu),
        "machine_busy_cores": _r((busy1 - busy0) / wall),
        "rss_before_mb": _r(rss0 / 2**20, 1),
        "rss_after_mb": _r(rss1 / 2**20, 1),
        "kb_per_connection": _r((rss1 - rss0) / 1024 / max(1, r["ok"]), 1),
        "idle_server_cpu_pct": _r((cpu3 - cpu2) * 100 / hold_s, 1),
    }
    if parts1:
        out["server_cores_parts"] = _diff(parts0, parts1, 1 / wall)
        out["idle_server_cpu_pct_parts"] = _diff(parts2, parts3, 100 / hold_s)
    if mem1:
        out["kb_per_connection_parts"] = _diff(mem0, mem1, 1 / 1024 / max(1, r["ok"]))
    return out


def presence_storm(
    lg: LoadGen,
    probe: Probe,
    users: Sequence[tuple[str, str]],
    contacts: Sequence[int],
    mech: str = "SCRAM-SHA-1",
    *,
    concurrency: int = 50,
    timeout: float = 60.0,
    settle: float = 1.0,
) -> dict[str, Any]:
    """Users whose rosters hold ``contacts[i]`` mutual contacts log in (roster get +
    initial presence); done when every user has seen every contact's presence."""
    _settle(settle, probe)
    t0 = time.monotonic()
    (cpu0, parts0), own0, busy0 = _server_cpu(probe), own_cpu(), machine_busy()
    # expect: every contact's presence plus the user's own
    r = lg.login(users, mech, concurrency, "lg-pres", roster=True, expect=[n + 1 for n in contacts])
    replies = lg.call_all(
        [{"op": "wait_presence", "timeout": timeout}] * lg.n, timeout=timeout + 30
    )
    (cpu1, parts1), own1, busy1 = _server_cpu(probe), own_cpu(), machine_busy()
    done = max([r["end"]] + [x["last_complete"] for x in replies])
    wall = max(1e-9, done - r["start"])
    delivered = sum(x["presences"] for x in replies)
    lat = percentiles(x * 1000 for x in r["lat"])
    lg_cpu = r["cpu_s"] + sum(x["cpu_s"] for x in replies) + own1 - own0
    lg.close_all()
    out = {
        "scenario": "presence",
        "users": len(users),
        "contacts_per_user": _r(sum(contacts) / max(1, len(contacts)), 1),
        "mech": mech,
        "ok": r["ok"],
        "failed": r["failed"],
        "failures": r["failures"],
        "wall_s": _r(wall, 3),
        "presences_delivered": delivered,
        "presences_per_s": _r(delivered / wall, 1),
        "presences_per_user": _r(delivered / max(1, r["ok"]), 1),
        "incomplete_users": sum(x["incomplete"] for x in replies),
        "missing_presences": sum(x["missing"] for x in replies),
        "login_latency_ms": {k: _r(v) for k, v in lat.items()},
        "server_cpu_s": _r(cpu1 - cpu0),
        "server_cpu_ms_per_login": _r((cpu1 - cpu0) * 1000 / max(1, r["ok"])),
        "loadgen_cpu_s": _r(lg_cpu),
        "loadgen_cores": _r(lg_cpu / wall),
        "machine_busy_cores": _r((busy1 - busy0) / max(wall, time.monotonic() - t0)),
    }
    if parts1:
        out["server_cpu_parts_s"] = _diff(parts0, parts1)
    return out


def _muc_phase(
    lg: LoadGen,
    probe: Probe,
    rooms: int,
    size: int,
    users: Sequence[tuple[str, str]],
    mech: str,
    *,
    service: str,
    tag: str,
    senders: int,
    window: int,
    warmup: float,
    duration: float,
    drain: float,
    concurrency: int,
    join_concurrency: int,
    settle: float,
) -> dict[str, Any]:
    """``rooms`` rooms of ``size`` occupants: log in, join, closed loop, close."""
    _settle(settle, probe)
    need = rooms * size
    out: dict[str, Any] = {
        "rooms": rooms,
        "occupants_per_room": size,
        "clients": need,
        "senders_per_room": min(senders, size),
        "window_per_sender": window,
    }
    if len(users) < need:
        raise ValueError(f"{rooms} rooms of {size} need {need} users, {len(users)} exist")
    r = lg.login(users[:need], mech, concurrency, "lg-muc", group=size)
    out.update(logged_in=r["ok"], login_failed=r["failed"], failures=r["failures"])
    if r["failed"]:
        lg.close_all()
        out["error"] = f"{r['failed']} logins failed"
        return out
    names = [f"bench{tag}-{rooms}x{size}-{i}@{service}" for i in range(rooms)]
    per_worker = lg.split(names)  # room i on worker i mod n, as the logins above
    t0 = time.monotonic()
    cpu0 = _server_cpu(probe)[0]
    timeout = 60.0 + need * size / 200  # a join's presences grow with the room
    per = max(1, join_concurrency // lg.n)
    joins = lg.call_all(
        [
            {"op": "muc_join", "rooms": rs, "size": size, "concurrency": per, "timeout": timeout}
            for rs in per_worker
        ],
        timeout=timeout + 30,
    )
    join_lat = array("d")
    for j in joins:
        join_lat.frombytes(j["lat"])
    out["join"] = {
        "concurrency": per * lg.n,
        "joined": sum(j["entered"] for j in joins),
        "missing_subjects": sum(j["missing_subjects"] for j in joins),
        "failures": [f for j in joins for f in j["failures"]][:5],
        "wall_s": _r(time.monotonic() - t0, 2),
        "latency_ms": {k: _r(v * 1000) for k, v in percentiles(join_lat).items()},
        "server_cpu_s": _r(_server_cpu(probe)[0] - cpu0),
    }
    if out["join"]["failures"]:
        lg.close_all()
        out["error"] = "joins failed: " + "; ".join(out["join"]["failures"][:2])
        return out
    t_start = time.monotonic() + 0.3
    cmd = {
        "op": "muc_loop",
        "t_start": t_start,
        "warmup": warmup,
        "duration": duration,
        "senders": senders,
        "window": window,
        "drain": drain,
    }
    w = _measured(lg, probe, cmd, t_start, warmup, duration, drain, "group chat phase")
    lg.close_all()
    replies, lat = w.replies, w.lat
    cpu0, cpu1, parts0, parts1 = w.cpu0, w.cpu1, w.parts0, w.parts1
    own0, own1, busy0, busy1 = w.own0, w.own1, w.busy0, w.busy1
    in_window = sum(x["in_window"] for x in replies)
    expected = sum(x["expected"] for x in replies)
    delivered = sum(x["received"] for x in replies)
    server = cpu1 - cpu0
    lg_cpu = sum(x["window_cpu_s"] for x in replies) + own1 - own0
    out.update(
        {
            "senders": sum(x["posting"] for x in replies),
            "sent": sum(x["sent"] for x in replies),
            "expected_deliveries": expected,
            "delivered": delivered,
            "lost": max(0, expected - delivered),
            "incomplete_messages": sum(x["incomplete"] for x in replies),
            "unexpected": sum(x["unexpected"] for x in replies),
            "errors": sum(x["errors"] for x in replies),
            "error_samples": [e for x in replies for e in x["error_samples"]][:3],
            "dropped_connections": sum(x["dropped"] for x in replies),
            "drain_s": _r(max(x["drain_s"] for x in replies)),
            "warmup_s": warmup,
            "duration_s": duration,
            "posted_in_window": sum(x["sent_in_window"] for x in replies),
            "delivered_in_window": in_window,
            "deliveries_per_s": _r(in_window / duration, 1),
            "posted_per_s": _r(sum(x["sent_in_window"] for x in replies) / duration, 1),
            "latency_ms": {k: _r(v / 1000, 3) for k, v in percentiles(lat).items()},
            "server_cpu_s": _r(server),
            "server_cores": _r(server / duration),
            "server_cpu_us_per_delivery": _r(server * 1e6 / max(1, in_window), 1),
            "loadgen_cpu_s": _r(lg_cpu),
            "loadgen_cores": _r(lg_cpu / duration),
            "machine_busy_cores": _r((busy1 - busy0) / duration),
        }
    )
    if parts1:
        out["server_cpu_parts_s"] = _diff(parts0, parts1)
    return out


def muc(
    lg: LoadGen,
    probe: Probe,
    users: Sequence[tuple[str, str]],
    specs: Sequence[tuple[int, int]],
    mech: str = "PLAIN",
    *,
    service: str = "",
    senders: int = 2,
    window: int = 2,
    duration: float = 15.0,
    warmup: float = 2.0,
    drain: float = 10.0,
    concurrency: int = 50,
    join_concurrency: int = 10,
    settle: float = 1.0,
) -> dict[str, Any]:
    """Group chat (XEP-0045), one phase per ``(rooms, occupants)`` in ``specs``.

    Every occupant is a connection of its own; a room's occupants are on one
    load generator worker (the closed loop is counted there) and alternate
    over the target's ports by index. Rooms get names of their own in each
    run (``bench<tag>-<R>x<N>-<i>``), are created by their first occupant and
    configured as instant rooms, and are gone when the phase closes its
    connections. Each delivery is one groupchat message received by one
    occupant, the sender's echo included: a message posted in a room of N
    makes N deliveries. ``concurrency`` logins and ``join_concurrency`` joins
    are in flight at a time (a join costs the server a presence to and from
    every occupant already in: 10 keep the cluster's calls within their
    deadlines in rooms of 100)."""
    service = service or f"conference.{lg.target.domain}"
    tag = secrets.token_hex(3)
    out: dict[str, Any] = {
        "scenario": "muc",
        "mech": mech,
        "service": service,
        "senders_per_room": senders,
        "window_per_sender": window,
        "phases": {},
    }
    for rooms, size in specs:
        out["phases"][f"{rooms}x{size}"] = _muc_phase(
            lg, probe, rooms, size, users, mech, service=service, tag=tag, senders=senders,
            window=window, warmup=warmup, duration=duration, drain=drain,
            concurrency=concurrency, join_concurrency=join_concurrency, settle=settle,
        )  # fmt: skip
    out["lost_total"] = sum(p.get("lost", 0) for p in out["phases"].values())
    return out


#: a publisher's user and password, and its contacts'
Star = tuple[tuple[str, str], Sequence[tuple[str, str]]]


def _pep_phase(
    lg: LoadGen,
    probe: Probe,
    stars: Sequence[Star],
    pubs: int,
    size: int,
    mech: str,
    *,
    tag: str,
    window: int,
    warmup: float,
    duration: float,
    drain: float,
    concurrency: int,
    ready_timeout: float,
    settle: float,
) -> dict[str, Any]:
    """``pubs`` publishers with ``size`` contacts each: log in (publishers
    first, then their contacts with caps), prime, closed loop, close."""
    _settle(settle, probe)
    out: dict[str, Any] = {
        "publishers": pubs,
        "contacts_per_publisher": size,
        "clients": pubs * (size + 1),
        "window_per_publisher": window,
    }
    if len(stars) < pubs or any(len(cs) < size for _p, cs in stars[:pubs]):
        raise ValueError(f"{pubs} publishers with {size} contacts each: not enough users")
    chosen = [(pub, list(cs[:size])) for pub, cs in stars[:pubs]]
    # publisher k and its contacts are on worker k mod n (its closed loop is
    # counted there); the publishers are online before their contacts, whose
    # presence (with caps) then reaches a session of the publisher, as
    # ejabberd needs (it notifies through the publisher's sessions)
    r1 = lg.login([pub for pub, _cs in chosen], mech, concurrency, "lg-pep")
    r2 = lg.login(
        [c for _pub, cs in chosen for c in cs], mech, concurrency, "lg-pep", group=size, caps=True
    )
    out.update(
        logged_in=r1["ok"] + r2["ok"],
        login_failed=r1["failed"] + r2["failed"],
        failures=(r1["failures"] + r2["failures"])[:5],
    )
    if out["login_failed"]:
        lg.close_all()
        out["error"] = f"{out['login_failed']} logins failed"
        return out
    per_worker = lg.split([[pub[0], [c[0] for c in cs]] for pub, cs in chosen])
    t0 = time.monotonic()
    cpu0 = _server_cpu(probe)[0]
    primes = lg.call_all(
        [
            {"op": "pep_prime", "stars": part, "tag": tag, "timeout": ready_timeout}
            for part in per_worker
        ],
        timeout=ready_timeout + 30,
    )
    ready = {
        "contacts": sum(x["contacts"] for x in primes),
        "ready": sum(x["ready"] for x in primes),
        "wall_s": _r(time.monotonic() - t0, 2),
        "primes_published": sum(x["primes"] for x in primes),
        "primes_acked": sum(x["acked"] for x in primes),
        "earlier_items": sum(x["stale"] for x in primes),
        "caps_queries": sum(x["disco_answered"] for x in primes),
        "caps_queried_by": sorted({f for x in primes for f in x["disco_from"]}),
        "errors": sum(x["errors"] for x in primes),
        "error_samples": [e for x in primes for e in x["error_samples"]][:3],
        "server_cpu_s": _r(_server_cpu(probe)[0] - cpu0),
    }
    out["prime"] = ready
    if ready["ready"] < ready["contacts"]:
        lg.close_all()
        out["error"] = (
            f"{ready['contacts'] - ready['ready']} of {ready['contacts']} contacts had no "
            f"notification within {ready_timeout:.0f}s ({ready['primes_published']} items "
            f"published, {ready['primes_acked']} acknowledged, {ready['errors']} errors, "
            f"{ready['caps_queries']} caps queries answered)"
        )
        return out
    t_start = time.monotonic() + 0.3
    cmd = {
        "op": "pep_loop",
        "t_start": t_start,
        "warmup": warmup,
        "duration": duration,
        "window": window,
        "drain": drain,
    }
    w = _measured(lg, probe, cmd, t_start, warmup, duration, drain, "PEP phase")
    lg.close_all()
    replies, lat = w.replies, w.lat
    in_window = sum(x["in_window"] for x in replies)
    expected = sum(x["expected"] for x in replies)
    delivered = sum(x["received"] for x in replies)
    published = sum(x["sent_in_window"] for x in replies)
    server = w.cpu1 - w.cpu0
    lg_cpu = sum(x["window_cpu_s"] for x in replies) + w.own1 - w.own0
    out.update(
        {
            "sent": sum(x["sent"] for x in replies),
            "acked": sum(x["acked"] for x in replies),
            "expected_notifications": expected,
            "delivered": delivered,
            "lost": max(0, expected - delivered),
            "incomplete_publishes": sum(x["incomplete"] for x in replies),
            "duplicates": sum(x["duplicates"] for x in replies),
            "to_publisher": sum(x["to_publisher"] for x in replies),
            "earlier_items": sum(x["stale"] for x in replies),
            "errors": sum(x["errors"] for x in replies),
            "error_samples": [e for x in replies for e in x["error_samples"]][:3],
            "dropped_connections": sum(x["dropped"] for x in replies),
            "drain_s": _r(max(x["drain_s"] for x in replies)),
            "caps_queries": sum(x["disco_answered"] for x in replies),
            "warmup_s": warmup,
            "duration_s": duration,
            "published_in_window": published,
            "delivered_in_window": in_window,
            "notifications_per_s": _r(in_window / duration, 1),
            "publishes_per_s": _r(published / duration, 1),
            "latency_ms": {k: _r(v / 1000, 3) for k, v in percentiles(lat).items()},
            "server_cpu_s": _r(server),
            "server_cores": _r(server / duration),
            "server_cpu_us_per_notification": _r(server * 1e6 / max(1, in_window), 1),
            "loadgen_cpu_s": _r(lg_cpu),
            "loadgen_cores": _r(lg_cpu / duration),
            "machine_busy_cores": _r((w.busy1 - w.busy0) / duration),
        }
    )
    if w.parts1:
        out["server_cpu_parts_s"] = _diff(w.parts0, w.parts1)
    return out


def pep(
    lg: LoadGen,
    probe: Probe,
    stars: Sequence[Star],
    specs: Sequence[tuple[int, int]],
    mech: str = "PLAIN",
    *,
    window: int = 2,
    duration: float = 15.0,
    warmup: float = 2.0,
    drain: float = 10.0,
    concurrency: int = 50,
    ready_timeout: float = 60.0,
    settle: float = 1.0,
) -> dict[str, Any]:
    """Personal eventing (XEP-0163), one phase per ``(publishers, contacts)``
    in ``specs``.

    ``stars``: each publisher's credentials and its contacts', every contact
    in a mutual ``both`` subscription with its publisher and with nobody
    else. Every client is a connection of its own; a publisher and its
    contacts are on one load generator worker. Contacts log in with entity
    capabilities (XEP-0115) whose features include ``urn:xmpp:bench:pep+notify``
    and answer the server's disco#info query about them (all share one
    ``ver``; each server asks at least once). The publishers then publish
    prime items until every contact has had one (the server knows their
    caps), and then the closed loop: each keeps ``window`` publishes in
    flight to the bench node, and publishes the next one once all its
    contacts have received one's notification. A notification is one
    contact receiving one item: a publish makes ``contacts`` of them. A
    contact's second copy of a publish counts as a duplicate (``lost``
    counts contacts that never had it), a copy to the publisher's own session
    (which asked for none) as ``to_publisher``."""
    tag = secrets.token_hex(3)
    out: dict[str, Any] = {
        "scenario": "pep",
        "mech": mech,
        "node": PEP_NODE,
        "caps_ver": CLIENT_VER,
        "window_per_publisher": window,
        "phases": {},
    }
    for pubs, size in specs:
        out["phases"][f"{pubs}x{size}"] = _pep_phase(
            lg, probe, stars, pubs, size, mech, tag=f"{tag}-{pubs}x{size}", window=window,
            warmup=warmup, duration=duration, drain=drain, concurrency=concurrency,
            ready_timeout=ready_timeout, settle=settle,
        )  # fmt: skip
    out["lost_total"] = sum(p.get("lost", 0) for p in out["phases"].values())
    return out


# ------------------------------------------------------------------- output


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out[prefix + k] = v
    return out


def table(result: dict[str, Any]) -> str:
    """A two-column text table of one scenario's figures."""
    rows = flatten(result)
    width = max(len(k) for k in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows.items())


def report(result: dict[str, Any], out: Callable[[str], Any] = print) -> None:
    out(json.dumps(result, sort_keys=False))
    out(table(result))


# ---------------------------------------------------------------------- CLI


def ring_contacts(n: int, k: int) -> list[list[int]]:
    """User i's contacts: the k/2 users before and after it on a ring (mutual)."""
    half = k // 2
    return [sorted({(i + d) % n for d in range(-half, half + 1) if d} - {i}) for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument(
        "--port",
        default="5222",
        help="client port; comma separated for several (a cluster's edges): client i uses "
        "port i mod n, so the two users of a pair are on different ports",
    )
    ap.add_argument("--domain", default="localhost")
    ap.add_argument(
        "--pid",
        required=True,
        help="server process to measure (its tree); comma separated for several (cluster)",
    )
    ap.add_argument(
        "--scenario", choices=["login", "messages", "idle", "presence", "muc", "pep"], required=True
    )
    ap.add_argument("--user-format", default="u{}", help="user names, {} is the index")
    ap.add_argument("--password", required=True)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--contacts", type=int, default=50, help="presence: roster size (ring)")
    ap.add_argument("--mech", default="SCRAM-SHA-1", choices=MECHANISMS)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--rooms", default="10x10,2x100", help="muc: ROOMSxOCCUPANTS, comma separated")
    ap.add_argument("--senders", type=int, default=2, help="muc: occupants posting per room")
    ap.add_argument(
        "--pep-sizes", default="1x100", help="pep: PUBLISHERSxCONTACTS, comma separated"
    )
    ap.add_argument(
        "--publisher-format", default="q{}", help="pep: publisher names, {} is the index"
    )
    ap.add_argument(
        "--contact-format",
        default="q{}c{}",
        help="pep: contact names, {} the publisher's index then the contact's; each must be "
        "in a mutual 'both' subscription with its publisher",
    )
    a = ap.parse_args(argv)
    raise_nofile()
    users = [(a.user_format.format(i), a.password) for i in range(a.clients)]
    ports = tuple(int(x) for x in a.port.split(",") if x)
    pids = [int(x) for x in a.pid.split(",") if x]
    probe: Probe = ProcTree(pids[0])
    if len(pids) > 1:
        probe = ProcSet({f"pid{p}": tree(p) for p in pids})
    with LoadGen(Target(a.host, ports[0], a.domain, ports), a.workers) as lg:
        if a.scenario == "login":
            res = login_storm(lg, probe, users, a.mech, a.concurrency)
        elif a.scenario == "messages":
            res = messages(
                lg, probe, users, a.mech, concurrency=a.concurrency, window=a.window,
                closed_s=a.duration, rate=a.rate, rate_s=a.duration,
            )  # fmt: skip
        elif a.scenario == "idle":
            res = idle(lg, probe, users, a.mech, concurrency=a.concurrency)
        elif a.scenario == "pep":
            specs = pep_specs(a.pep_sizes)
            stars: list[Star] = [
                (
                    (a.publisher_format.format(k), a.password),
                    [
                        (a.contact_format.format(k, j), a.password)
                        for j in range(max(c for _p, c in specs))
                    ],
                )
                for k in range(max(p for p, _c in specs))
            ]
            res = pep(
                lg, probe, stars, specs, a.mech, window=a.window, duration=a.duration,
                concurrency=a.concurrency,
            )  # fmt: skip
        elif a.scenario == "muc":
            res = muc(
                lg, probe, users, room_specs(a.rooms), a.mech, senders=a.senders,
                window=a.window, duration=a.duration, concurrency=a.concurrency,
            )  # fmt: skip
        else:
            n = len(ring_contacts(a.clients, a.contacts)[0])
            res = presence_storm(
                lg, probe, users, [n] * a.clients, a.mech, concurrency=a.concurrency
            )
    report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
