"""Group chat across ``kill -9`` of the server holding a busy persistent room.

For each target (``embedded``: the ``xmppd`` process; ``prosody`` and
``ejabberd``: the Debian packages, configured by bench/run.py with their MUC
service on ``conference.localhost``) this script:

1. starts the server (bench/run.py's target classes), creates the users, and
   has one owner create a room, configure it persistent and members-only with
   a history length of at least the number of messages, and make the others
   members; N occupants join;
2. the occupants post M groupchat messages, one after another, each waited
   for until the room echoes it to its sender;
3. ``kill -9`` of the real server process (xmppd's Python process, Prosody's
   Lua interpreter, ejabberd's ``beam.smp``, not the wrappers around them),
   then an immediate restart on the same data folder and port;
4. measures what the users see: whether their connections dropped and
   whether anything arrived before, the time from the kill until a client can
   log in again and until a rejoin succeeds and a message is echoed, whether
   the occupants are still in the room without rejoining (disco#info's
   occupant count, disco#items, and the occupant presences a joining client
   receives before its own), whether the configuration survived (a non-member
   is refused with ``registration-required``), how many of the M messages are
   in the history a rejoining client receives (``maxstanzas=1000``), and
   whether a bookmark with autojoin stored in private XML survived;
5. prints a markdown table (rows: the measures, columns: the targets) and
   writes ``bench/results/muc-restart-STAMP.json``.

Run as root (Prosody runs with ``run_as_root``, ejabberd as its own user, as
in bench/run.py)::

    .venv/bin/python bench/muc_restart.py --targets embedded,prosody,ejabberd \\
        --occupants 20 --messages 30

Every wait is bounded, and every server started is stopped, also on failure
or SIGTERM. The measuring part, :func:`measure_server`, takes only a host, a
port and ``kill``/``restart`` callables, so another deployment (the cluster,
whose case tests/cluster/test_muc_failover.py covers) can be measured by the
same code with its own callables.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from xml.sax.saxutils import escape, quoteattr

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from bench import run as bench_run  # noqa: E402
from bench.run import (  # noqa: E402
    BIN,
    DOMAIN,
    MUC_SERVICE,
    PASSWORD,
    RESULTS,
    Ejabberd,
    Embedded,
    Prosody,
    TargetServer,
    Users,
    wait_port,
)

TARGETS = ("embedded", "prosody", "ejabberd")
#: the process that is the server, by its command name (/proc/PID/comm), in
#: the tree bench/run.py starts: xmppd's console script runs in Python under
#: its own name; /usr/bin/prosody is a Lua script run through env; ejabberd is
#: setpriv -> ejabberdctl (a shell that stays) -> the BEAM emulator
SERVER_COMM: dict[str, tuple[str, ...]] = {
    "embedded": ("xmppd", "python"),
    "prosody": ("lua",),
    "ejabberd": ("beam.smp", "beam"),
}

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
NS_DATA = "jabber:x:data"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_PRIVATE = "jabber:iq:private"
NS_BOOKMARKS = "storage:bookmarks"
NS_PING = "urn:xmpp:ping"


def q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


IQ, MESSAGE, PRESENCE = q(NS_CLIENT, "iq"), q(NS_CLIENT, "message"), q(NS_CLIENT, "presence")


def log(msg: str) -> None:
    print(f"[muc-restart {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------ a client


class XmppError(Exception):
    pass


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the servers share a self-signed certificate
    return ctx


def stanza_error(el: ET.Element) -> str:
    """The defined condition of an error stanza (RFC 6120 8.3.3), or ''."""
    err = el.find(q(NS_CLIENT, "error"))
    if err is None:
        return ""
    for child in err:
        if child.tag.startswith(f"{{{NS_STANZAS}}}") and not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return "error"


def _short(el: ET.Element) -> str:
    return el.tag.split("}", 1)[-1] + (f" type={el.get('type')}" if el.get("type") else "")


Pred = Callable[[ET.Element], bool]


@dataclass
class Joined:
    """What a client saw of one join (XEP-0045 7.2), in order."""

    ok: bool = False
    error: str = ""
    codes: list[str] = field(default_factory=list)  # status codes of its own presence
    before_self: list[str] = field(default_factory=list)  # occupant nicks announced first
    history: list[str] = field(default_factory=list)  # bodies before the subject
    subject: bool = False


class Client:
    """A minimal XMPP client over asyncio: STARTTLS, SASL PLAIN, bind, initial
    presence; then a read loop that records every stanza with its arrival time
    (``log``), answers pings, and resolves waiters. The connection's end is
    recorded (``closed_at``, ``end_reason``) whoever ends it."""

    def __init__(self, user: str, password: str, resource: str, domain: str = DOMAIN) -> None:
        self.user = user
        self.password = password
        self.resource = resource
        self.domain = domain
        self.bare = f"{user}@{domain}"
        self.full_jid = ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.root: ET.Element | None = None
        self.ready: deque[ET.Element] = deque()
        self.stream_closed = False
        self.log: list[tuple[float, ET.Element]] = []
        self.waiters: list[tuple[Pred, asyncio.Future[ET.Element]]] = []
        self.task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.closed_at: float | None = None
        self.end_reason = ""
        self.closing = False
        self.ids = itertools.count(1)

    # ---- parsing
    def _reset(self) -> None:
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.root = None
        self.ready.clear()

    def _feed(self, data: bytes) -> None:
        self.parser.feed(data)
        for item in self.parser.read_events():
            if not isinstance(item, tuple) or len(item) != 2:
                continue
            event, el = item
            if not isinstance(el, ET.Element):
                continue
            if event == "start":
                if self.depth == 0:
                    self.root = el
                self.depth += 1
                continue
            self.depth -= 1
            if self.depth == 1:  # a top-level element is complete
                self.ready.append(el)
                if self.root is not None:
                    with contextlib.suppress(ValueError):
                        self.root.remove(el)
            elif self.depth == 0:
                self.stream_closed = True

    async def _next(self) -> ET.Element:
        assert self.reader is not None
        while not self.ready:
            if self.stream_closed:
                raise XmppError("stream closed by the server")
            data = await self.reader.read(65536)
            if not data:
                raise XmppError("connection closed by the server")
            self._feed(data)
        el = self.ready.popleft()
        if el.tag == q(NS_STREAM, "error"):
            raise XmppError("stream error: " + ",".join(c.tag.split("}")[-1] for c in el))
        return el

    async def _restart(self) -> ET.Element:
        assert self.writer is not None
        self._reset()
        self.writer.write(
            f"<?xml version='1.0'?><stream:stream to='{self.domain}' version='1.0'"
            " xml:lang='en' xmlns='jabber:client'"
            f" xmlns:stream='{NS_STREAM}'>".encode()
        )
        feats = await self._next()
        if feats.tag != q(NS_STREAM, "features"):
            raise XmppError(f"expected stream features, got {feats.tag}")
        return feats

    async def _negotiate_iq(self, iq_id: str, payload: str) -> ET.Element:
        self.send(payload)
        while True:
            el = await self._next()
            if el.tag == IQ and el.get("id") == iq_id:
                if el.get("type") != "result":
                    raise XmppError(f"{iq_id} failed: {stanza_error(el)}")
                return el
            self._record(el)

    # ---- login
    async def login(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        feats = await self._restart()
        if feats.find(q(NS_TLS, "starttls")) is None:
            raise XmppError("no STARTTLS offered")
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        el = await self._next()
        if el.tag != q(NS_TLS, "proceed"):
            raise XmppError(f"STARTTLS refused: {el.tag}")
        await self.writer.start_tls(_tls(), server_hostname=self.domain)
        feats = await self._restart()
        mechs = {m.text for m in feats.iter(q(NS_SASL, "mechanism"))}
        if "PLAIN" not in mechs:
            raise XmppError(f"PLAIN not offered ({sorted(m or '' for m in mechs)})")
        token = base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        el = await self._next()
        if el.tag != q(NS_SASL, "success"):
            cond = ",".join(c.tag.split("}")[-1] for c in el)
            raise XmppError(f"authentication failed: {cond}")
        feats = await self._restart()
        res = await self._negotiate_iq(
            "bind",
            f"<iq type='set' id='bind'><bind xmlns='{NS_BIND}'>"
            f"<resource>{escape(self.resource)}</resource></bind></iq>",
        )
        jid = res.find(f"{q(NS_BIND, 'bind')}/{q(NS_BIND, 'jid')}")
        if jid is None or not jid.text:
            raise XmppError("no JID in the bind result")
        self.full_jid = jid.text
        sess = feats.find(q(NS_SESSION, "session"))
        if sess is not None and sess.find(q(NS_SESSION, "optional")) is None:
            await self._negotiate_iq(
                "sess", f"<iq type='set' id='sess'><session xmlns='{NS_SESSION}'/></iq>"
            )
        # logged in once the server has processed the initial presence: it
        # echoes it to the sender's available resource (RFC 6121 4.2.2)
        self.send("<presence/>")
        while True:
            el = await self._next()
            self._record(el)
            if el.tag == PRESENCE and el.get("from") in (self.full_jid, self.bare):
                break
        self.task = asyncio.get_running_loop().create_task(self._read_loop())

    # ---- established
    def _record(self, el: ET.Element) -> None:
        self.log.append((time.monotonic(), el))

    def _dispatch(self, el: ET.Element) -> None:
        self._record(el)
        if el.tag == IQ and el.get("type") == "get" and el.find(q(NS_PING, "ping")) is not None:
            to = f" to={quoteattr(el.get('from', ''))}" if el.get("from") else ""
            self.send(f"<iq type='result' id={quoteattr(el.get('id', ''))}{to}/>")
        keep = []
        for pred, fut in self.waiters:
            if fut.done():
                continue
            if pred(el):
                fut.set_result(el)
            else:
                keep.append((pred, fut))
        self.waiters = keep

    async def _read_loop(self) -> None:
        assert self.reader is not None
        reason = "TCP closed, no </stream:stream>"
        try:
            while True:
                while self.ready:
                    self._dispatch(self.ready.popleft())
                if self.stream_closed:
                    reason = "</stream:stream>, then closed"
                    break
                data = await self.reader.read(65536)
                if not data:
                    break
                self._feed(data)
        except ConnectionResetError:
            reason = "TCP reset"
        except (OSError, ssl.SSLError, ET.ParseError) as exc:
            reason = f"{type(exc).__name__}"
        self._ended("closed by us" if self.closing else reason)

    def _ended(self, reason: str) -> None:
        if self.closed_at is None:
            self.closed_at = time.monotonic()
            self.end_reason = reason
        for _pred, fut in self.waiters:
            if not fut.done():
                fut.set_exception(XmppError(f"connection ended: {reason}"))
        self.waiters = []
        self.closed.set()

    def send(self, xml: str) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(xml.encode())

    def expect(self, pred: Pred) -> asyncio.Future[ET.Element]:
        fut: asyncio.Future[ET.Element] = asyncio.get_running_loop().create_future()
        if self.closed_at is not None:
            fut.set_exception(XmppError(f"connection ended: {self.end_reason}"))
        else:
            self.waiters.append((pred, fut))
        return fut

    async def iq(self, typ: str, to: str | None, payload: str, timeout: float = 10) -> ET.Element:
        iq_id = f"q{next(self.ids)}"
        fut = self.expect(lambda el: el.tag == IQ and el.get("id") == iq_id)
        dest = f" to={quoteattr(to)}" if to else ""
        self.send(f"<iq type='{typ}' id='{iq_id}'{dest}>{payload}</iq>")
        return await asyncio.wait_for(fut, timeout)

    async def join(self, room: str, nick: str, maxstanzas: int, timeout: float = 10) -> Joined:
        """Enter ``room`` as ``nick`` and wait for the subject (the last stanza
        of a join, 7.2.15) or an error; what came is read back from the log."""
        me = f"{room}/{nick}"
        start = len(self.log)

        def end(el: ET.Element) -> bool:
            frm = el.get("from", "")
            if el.tag == PRESENCE and frm == me and el.get("type") == "error":
                return True
            return (
                el.tag == MESSAGE
                and (frm == room or frm.startswith(room + "/"))
                and el.find(q(NS_CLIENT, "subject")) is not None
                and el.find(q(NS_CLIENT, "body")) is None
            )

        fut = self.expect(end)
        self.send(
            f"<presence to={quoteattr(me)}><x xmlns='{NS_MUC}'>"
            f"<history maxstanzas='{maxstanzas}'/></x></presence>"
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, timeout)
        out, seen_self = Joined(), False
        for _t, el in self.log[start:]:
            frm = el.get("from", "")
            if not (frm == room or frm.startswith(room + "/")):
                continue
            if el.tag == PRESENCE:
                nick_of = frm[len(room) + 1 :]
                if frm == me:
                    if el.get("type") == "error":
                        out.error = stanza_error(el) or "error"
                        return out
                    seen_self = True
                    out.codes = [
                        s.get("code", "")
                        for s in el.iter(q(NS_MUC_USER, "status"))
                        if s.get("code")
                    ]
                elif not seen_self and el.get("type") not in ("unavailable", "error"):
                    out.before_self.append(nick_of)
            elif el.tag == MESSAGE:
                body = el.find(q(NS_CLIENT, "body"))
                if el.find(q(NS_CLIENT, "subject")) is not None and body is None:
                    out.subject = True
                    break
                if body is not None and body.text:
                    out.history.append(body.text)
        out.ok = seen_self
        if not seen_self:
            out.error = "timeout" if self.closed_at is None else f"closed: {self.end_reason}"
        return out

    async def close(self) -> None:
        self.closing = True
        if self.writer is not None:
            with contextlib.suppress(Exception):
                if not self.writer.is_closing():
                    self.writer.write(b"</stream:stream>")
                self.writer.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.closed_at is None:
            self._ended("closed by us")


# --------------------------------------------------------------- room helpers


def _form_submit(form: ET.Element, set_values: dict[str, str]) -> tuple[str, list[str]]:
    """The room's configuration form submitted back with ``set_values``
    changed (only fields the form has); returns the form and the fields set."""
    parts, done = [f"<x xmlns='{NS_DATA}' type='submit'>"], []
    for f in form.findall(q(NS_DATA, "field")):
        var = f.get("var")
        if not var or f.get("type") == "fixed":
            continue
        if var in set_values:
            values = [set_values[var]]
            done.append(var)
        else:
            values = [v.text or "" for v in f.findall(q(NS_DATA, "value"))]
        parts.append(f"<field var={quoteattr(var)}>")
        parts.extend(f"<value>{escape(v)}</value>" for v in values)
        parts.append("</field>")
    parts.append("</x>")
    return "".join(parts), done


async def configure_room(owner: Client, room: str, history: int) -> dict[str, Any]:
    """Persistent, members-only, ``history`` messages kept (where the room's
    form has the field; ejabberd's history size is the service's)."""
    res = await owner.iq("get", room, f"<query xmlns='{NS_MUC_OWNER}'/>")
    if res.get("type") != "result":
        raise XmppError(f"room configuration form: {stanza_error(res)}")
    form = res.find(f"{q(NS_MUC_OWNER, 'query')}/{q(NS_DATA, 'x')}")
    if form is None:
        raise XmppError("no configuration form")
    want = {
        "muc#roomconfig_persistentroom": "1",
        "muc#roomconfig_membersonly": "1",
        "muc#roomconfig_historylength": str(history),
    }
    x, done = _form_submit(form, want)
    res = await owner.iq("set", room, f"<query xmlns='{NS_MUC_OWNER}'>{x}</query>")
    if res.get("type") != "result":
        raise XmppError(f"room configuration refused: {stanza_error(res)}")
    return {"fields_set": done, "fields_absent": sorted(set(want) - set(done))}


async def _query(c: Client, room: str, namespace: str) -> Any:
    """The result IQ of a get to ``room``, or a dict naming the error."""
    try:
        res = await c.iq("get", room, f"<query xmlns='{namespace}'/>", timeout=5)
    except (TimeoutError, XmppError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if res.get("type") != "result":
        return {"error": stanza_error(res)}
    return res


async def disco_info(c: Client, room: str) -> dict[str, Any]:
    res = await _query(c, room, NS_DISCO_INFO)
    if isinstance(res, dict):
        return res
    feats = [f.get("var", "") for f in res.iter(q(NS_DISCO_INFO, "feature"))]
    occupants: int | None = None
    for f in res.iter(q(NS_DATA, "field")):
        if f.get("var") == "muc#roominfo_occupants":
            v = f.find(q(NS_DATA, "value"))
            with contextlib.suppress(TypeError, ValueError):
                occupants = int(v.text or "") if v is not None else None
    return {
        "occupants": occupants,
        "persistent": "muc_persistent" in feats,
        "members_only": "muc_membersonly" in feats,
    }


async def disco_items(c: Client, room: str) -> dict[str, Any]:
    res = await _query(c, room, NS_DISCO_ITEMS)
    if isinstance(res, dict):
        return res
    return {"items": [i.get("jid", "") for i in res.iter(q(NS_DISCO_ITEMS, "item"))]}


def bookmark_xml(room: str, nick: str) -> str:
    return (
        f"<query xmlns='{NS_PRIVATE}'><storage xmlns='{NS_BOOKMARKS}'>"
        f"<conference jid={quoteattr(room)} autojoin='true' name='restart bench'>"
        f"<nick>{escape(nick)}</nick></conference></storage></query>"
    )


async def bookmark_autojoin(c: Client, room: str) -> bool | str:
    """Whether the user's bookmarks (XEP-0048 in private XML) autojoin ``room``."""
    try:
        res = await c.iq(
            "get", None, f"<query xmlns='{NS_PRIVATE}'><storage xmlns='{NS_BOOKMARKS}'/></query>"
        )
    except (TimeoutError, XmppError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if res.get("type") != "result":
        return stanza_error(res)
    return any(
        b.get("jid") == room and b.get("autojoin") in ("true", "1")
        for b in res.iter(q(NS_BOOKMARKS, "conference"))
    )


def _is_echo(room: str, nick: str, body: str) -> Pred:
    def pred(el: ET.Element) -> bool:
        b = el.find(q(NS_CLIENT, "body"))
        return (
            el.tag == MESSAGE
            and el.get("type") == "groupchat"
            and el.get("from") == f"{room}/{nick}"
            and b is not None
            and b.text == body
        )

    return pred


async def login_until(
    host: str, port: int, user: str, password: str, resource: str, deadline: float
) -> tuple[Client, int, list[str]]:
    """Log in, again and again, until it works or ``deadline`` (monotonic)."""
    attempts, errors = 0, list[str]()
    while True:
        attempts += 1
        c = Client(user, password, resource)
        try:
            await asyncio.wait_for(c.login(host, port), max(0.1, min(10.0, deadline - now())))
            return c, attempts, errors
        except (OSError, XmppError, TimeoutError, ssl.SSLError, ET.ParseError) as exc:
            await c.close()
            msg = f"{type(exc).__name__}: {exc}"[:160]
            if not errors or errors[-1] != msg:
                errors.append(msg)
            if now() >= deadline:
                raise TimeoutError(f"no login after {attempts} attempts: {errors[-3:]}") from exc
            await asyncio.sleep(0.05)


async def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a server on ``port`` answers a stream header with its own. A
    bare TCP connect is not enough: while a killed process is torn down, its
    listening socket can still complete a handshake, then resets it."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(
            f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0'"
            f" xmlns='jabber:client' xmlns:stream='{NS_STREAM}'>".encode()
        )
        data = await asyncio.wait_for(reader.read(4096), timeout)
        return b"stream" in data
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout)


def now() -> float:
    return time.monotonic()


def _ms(t: float | None, t0: float) -> float | None:
    return None if t is None else round((t - t0) * 1000, 1)


# ------------------------------------------------------------------ measuring


@dataclass
class Plan:
    """Who does what. ``users[:occupants]`` are the occupants (the first owns
    the room), then a member who is not an occupant (the observer) and a
    user who is not a member (the stranger); all with ``password``."""

    occupants: int
    messages: int
    users: list[str]
    password: str = PASSWORD
    service: str = MUC_SERVICE
    #: seconds, from the kill, for the server to take logins and the room back
    recovery_timeout: float = 150.0
    step_timeout: float = 15.0
    #: seconds between the last echo and the kill (0: a busy room, killed mid-stream)
    settle: float = 0.0

    @property
    def observer(self) -> str:
        return self.users[self.occupants]

    @property
    def stranger(self) -> str:
        return self.users[self.occupants + 1]


async def _setup(
    host: str, port: int, plan: Plan, room: str
) -> tuple[list[Client], dict[str, Any]]:
    out: dict[str, Any] = {"room": room}
    sem = asyncio.Semaphore(10)

    async def one(user: str) -> Client:
        async with sem:  # again while a server that just started is not ready yet
            c, _n, _errors = await login_until(host, port, user, plan.password, "occ", now() + 60)
            return c

    t0 = now()
    clients = list(await asyncio.gather(*(one(u) for u in plan.users[: plan.occupants])))
    out["login_s"] = round(now() - t0, 2)
    owner = clients[0]
    j = await owner.join(room, "n0", 0, plan.step_timeout)
    if not j.ok:
        raise XmppError(f"the owner could not create the room: {j.error}")
    out["created_201"] = "201" in j.codes
    out["config"] = await configure_room(owner, room, plan.messages)
    members = [*plan.users[1 : plan.occupants], plan.observer]
    for k in range(0, len(members), 10):  # one item per request: every server takes that
        await asyncio.gather(
            *(
                owner.iq(
                    "set",
                    room,
                    f"<query xmlns='{NS_MUC_ADMIN}'><item affiliation='member'"
                    f" jid='{m}@{DOMAIN}'/></query>",
                )
                for m in members[k : k + 10]
            )
        )
    t0 = now()
    joins = await asyncio.gather(
        *(c.join(room, f"n{i}", 0, plan.step_timeout) for i, c in enumerate(clients) if i)
    )
    bad = [j.error for j in joins if not j.ok]
    if bad:
        raise XmppError(f"{len(bad)} occupants could not join: {Counter(bad).most_common(3)}")
    out["join_s"] = round(now() - t0, 2)
    if len(clients) > 1:
        res = await clients[1].iq("set", None, bookmark_xml(room, "n1"))
        out["bookmark_stored"] = res.get("type") == "result"
    out["disco_info"] = await disco_info(owner, room)
    return clients, out


async def _exchange(clients: list[Client], plan: Plan, room: str, tag: str) -> dict[str, Any]:
    """M messages, round robin over the occupants, each waited for until the
    room echoes it to its sender; then every occupant's copies are counted."""
    echoed, missed, t0 = 0, 0, now()
    for k in range(plan.messages):
        i = k % len(clients)
        body = f"{tag} {k}"
        fut = clients[i].expect(_is_echo(room, f"n{i}", body))
        clients[i].send(
            f"<message to={quoteattr(room)} type='groupchat' id='m{k}'>"
            f"<body>{escape(body)}</body></message>"
        )
        try:
            await asyncio.wait_for(fut, plan.step_timeout)
            echoed += 1
        except (TimeoutError, XmppError):
            missed += 1
    wall = now() - t0
    bodies = {f"{tag} {k}" for k in range(plan.messages)}

    def copies() -> int:
        return sum(
            len({b.text for _t, el in c.log if (b := el.find(q(NS_CLIENT, "body"))) is not None}
                & bodies)
            for c in clients
        )  # fmt: skip

    deadline = now() + 5
    while copies() < plan.messages * len(clients) and now() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # the last copies to the other occupants
    return {
        "sent": plan.messages,
        "echoed": echoed,
        "not_echoed": missed,
        "copies_delivered": copies(),
        "copies_expected": plan.messages * len(clients),
        "wall_s": round(wall, 2),
    }


async def _after_kill(
    host: str,
    port: int,
    plan: Plan,
    room: str,
    tag: str,
    clients: list[Client],
    t_kill: float,
    restart_done: asyncio.Future[Any],
) -> dict[str, Any]:
    deadline = t_kill + plan.recovery_timeout
    res: dict[str, Any] = {}
    bodies = {f"{tag} {k}" for k in range(plan.messages)}
    # the observer asks about the room before the rejoiner is back in it, and
    # joins after it (so that only one of them could re-create a lost room)
    probed, rejoined = asyncio.Event(), asyncio.Event()

    async def drops() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(c.closed.wait() for c in clients)), plan.step_timeout
            )
        ended = [c for c in clients if c.closed_at is not None]
        after = [(t, el) for c in clients for t, el in c.log if t >= t_kill]
        res["connections"] = {
            "occupants": len(clients),
            "dropped": len(ended),
            "drop_ms_max": max((_ms(c.closed_at, t_kill) or 0.0) for c in ended) if ended else None,
            "how": dict(Counter(c.end_reason for c in ended)),
        }
        res["stanzas_before_drop"] = {
            "count": len(after),
            "kinds": dict(Counter(_short(el) for _t, el in after)),
        }

    async def listening() -> None:
        # from the first dropped connection on: until then the dying process
        # may still hold its listening socket (SIGKILL takes effect when the
        # kernel next runs it: about 0.1 s on a busy machine)
        waits = [asyncio.ensure_future(c.closed.wait()) for c in clients]
        await asyncio.wait(waits, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        while now() < deadline:
            if await answers(host, port):
                res["listening_s"] = round(now() - t_kill, 3)
                return
            await asyncio.sleep(0.02)

    async def observer() -> None:
        """A member who was not in the room: logs in, asks the room about its
        occupants, joins and counts who is announced before itself."""
        try:
            c, attempts, errors = await login_until(
                host, port, plan.observer, plan.password, "probe", deadline
            )
        except TimeoutError as exc:
            res["observer"] = {"error": str(exc)}
            probed.set()
            return
        obs: dict[str, Any] = {"login_s": round(now() - t_kill, 3), "attempts": attempts}
        obs["login_errors"] = errors[:3]
        res["observer"] = obs
        try:
            obs["disco_info"] = await disco_info(c, room)
            obs["disco_items"] = await disco_items(c, room)
            probed.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rejoined.wait(), max(0.1, deadline - now()))
            j = await c.join(room, "observer", 0, plan.step_timeout)
            # the rejoining occupant (n1) may be back already: only the others count
            stayed = sorted({n for n in j.before_self if n != "n1" and n.startswith("n")})
            obs["join"] = {"ok": j.ok, "error": j.error, "codes": j.codes, "stayed": stayed}
        finally:
            probed.set()
            await c.close()

    async def rejoiner() -> None:
        try:
            await rejoin()
        finally:
            rejoined.set()

    async def rejoin() -> None:
        """An occupant coming back: a new connection, the same nick, history asked."""
        out: dict[str, Any] = {}
        res["rejoin"] = out
        joins: list[str] = []
        while now() < deadline:
            try:
                c, _attempts, _errors = await login_until(
                    host, port, plan.users[1], plan.password, "back", deadline
                )
            except TimeoutError as exc:
                out["error"] = str(exc)
                return
            out.setdefault("login_s", round(now() - t_kill, 3))
            t_wait = now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(probed.wait(), plan.step_timeout)
            out["waited_for_observer_s"] = round(now() - t_wait, 3)
            try:
                j = await c.join(room, "n1", 1000, plan.step_timeout)
                if not j.ok:  # again a little later (the service may still be loading)
                    joins.append(j.error)
                    out["join_errors"] = joins[-5:]
                    if len(joins) >= 20:
                        out["error"] = f"no join in 20 tries: {j.error}"
                        return
                    await asyncio.sleep(0.25)
                    continue
                out["join_s"] = round(now() - t_kill, 3)
                out["codes"] = j.codes
                out["room_recreated"] = "201" in j.codes
                out["history_received"] = len(j.history)
                out["history_of_ours"] = len(set(j.history) & bodies)
                body = f"{tag} after"
                fut = c.expect(_is_echo(room, "n1", body))
                c.send(
                    f"<message to={quoteattr(room)} type='groupchat'><body>{body}</body></message>"
                )
                try:
                    await asyncio.wait_for(fut, plan.step_timeout)
                    out["echo_s"] = round(now() - t_kill, 3)
                except (TimeoutError, XmppError) as exc:
                    out["echo_error"] = f"{type(exc).__name__}: {exc}"
                out["bookmark_autojoin"] = await bookmark_autojoin(c, room)
                return
            finally:
                await c.close()
        out.setdefault("error", f"no rejoin within {plan.recovery_timeout:.0f}s: {joins[-3:]}")

    await asyncio.gather(drops(), listening(), observer(), rejoiner())
    # the harness's restart call has returned (the server listens) before the stranger
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(restart_done), max(1.0, deadline - now()))
    try:
        s, _a, _e = await login_until(host, port, plan.stranger, plan.password, "x", deadline)
        try:
            j = await s.join(room, "stranger", 0, plan.step_timeout)
            res["stranger"] = {"ok": j.ok, "error": j.error, "codes": j.codes}
        finally:
            await s.close()
    except TimeoutError as exc:
        res["stranger"] = {"error": str(exc)}
    return res


async def measure(
    host: str,
    port: int,
    kill: Callable[[], dict[str, Any]],
    restart: Callable[[], dict[str, Any]],
    plan: Plan,
) -> dict[str, Any]:
    """The whole sequence against one server (see the module's docstring).

    ``kill()`` kills the server at once and returns what it killed;
    ``restart()`` (run in a thread, right after the kill, while the clients
    measure) brings it back and returns when it listens. Both are the
    caller's: a single server's are :func:`kill_target` and
    :func:`restart_target`; a cluster would kill the replica holding the
    room and restart it or do nothing."""
    room = f"busy-{secrets.token_hex(3)}@{plan.service}"
    tag = f"mr-{secrets.token_hex(3)}"
    out: dict[str, Any] = {
        "occupants": plan.occupants,
        "messages": plan.messages,
        "settle_s": plan.settle,
    }
    clients: list[Client] = []
    try:
        clients, out["setup"] = await asyncio.wait_for(_setup(host, port, plan, room), 180)
        log(f"  {plan.occupants} occupants in {room}; {plan.messages} messages")
        out["exchange"] = await asyncio.wait_for(
            _exchange(clients, plan, room, tag), 60 + plan.messages * 2
        )
        await asyncio.sleep(plan.settle)
        loop = asyncio.get_running_loop()
        t_kill = now()
        out["kill"] = kill()
        log(f"  killed {out['kill'].get('comm')} (pid {out['kill'].get('pid')}); restarting")

        def timed_restart() -> dict[str, Any]:
            info = restart()
            info["returned_s"] = round(now() - t_kill, 3)
            if isinstance(info.get("gone_at"), float):  # the killed process is gone
                info["killed_gone_s"] = round(info.pop("gone_at") - t_kill, 3)
            return info

        restart_done = loop.run_in_executor(None, timed_restart)
        try:
            out["after"] = await asyncio.wait_for(
                _after_kill(host, port, plan, room, tag, clients, t_kill, restart_done),
                plan.recovery_timeout + 60,
            )
        finally:
            try:
                out["restart"] = await restart_done
            except Exception as exc:
                out["restart"] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return out


def measure_server(
    host: str,
    port: int,
    kill: Callable[[], dict[str, Any]],
    restart: Callable[[], dict[str, Any]],
    plan: Plan,
) -> dict[str, Any]:
    """The hook for any deployment: :func:`measure` in an event loop of its own.

    The users of ``plan`` must exist with ``plan.password``. For the cluster,
    say, ``kill`` would SIGKILL the muc replica holding the room (found once
    the room exists, as tests/cluster/test_muc_failover.py does) and return
    ``{"pid": ..., "comm": ...}``; ``restart`` would start it again, or return
    ``{}`` at once when the other replica is to take the room over; ``port``
    is one edge's. The occupants' connections then stay up, which the
    figures show (no drop)."""
    return asyncio.run(measure(host, port, kill, restart, plan))


# ------------------------------------------------------------- our targets


class EmbeddedKeep(Embedded):
    """bench/run.py's embedded target; history kept up to the messages posted
    (xmppd keeps at most ``muc_max_history``, 50 by default, per room)."""

    history = 50

    def env(self) -> dict[str, str]:
        env = super().env()
        env["XMPPD_MUC_MAX_HISTORY"] = str(max(50, self.history))
        return env


CLASSES: dict[str, type[TargetServer]] = {
    "embedded": EmbeddedKeep,
    "prosody": Prosody,
    "ejabberd": Ejabberd,
}


@contextlib.contextmanager
def history_config(messages: int) -> Iterator[int]:
    """bench/run.py's MUC settings for the peers, with the history they keep
    raised to ``messages`` (both keep 20 there: Prosody caps a room's history
    length at ``max_history_messages``, ejabberd's is ``history_size``)."""
    keep = max(20, messages)
    old_p, old_e = bench_run.PROSODY_MUC, bench_run.EJABBERD_MUC
    new_p, n = re.subn(r"max_history_messages = \d+", f"max_history_messages = {keep}", old_p)
    if n != 1:
        new_p = old_p + f"max_history_messages = {keep}\n"
    new_e, n = re.subn(r"history_size: \d+", f"history_size: {keep}", old_e)
    if n != 1:
        raise RuntimeError("bench/run.py's EJABBERD_MUC has no history_size to raise")
    bench_run.PROSODY_MUC, bench_run.EJABBERD_MUC = new_p, new_e
    try:
        yield keep
    finally:
        bench_run.PROSODY_MUC, bench_run.EJABBERD_MUC = old_p, old_e


def _check_history_config(t: TargetServer, keep: int) -> None:
    if isinstance(t, Prosody):
        text, want = t.cfg.read_text(), f"max_history_messages = {keep}"
    elif isinstance(t, Ejabberd):
        text, want = (t.work / "cfg" / "ejabberd.yml").read_text(), f"history_size: {keep}"
    else:
        return
    if want not in text:
        raise RuntimeError(f"{t.name}: its configuration does not have {want!r}")


def _tree(pid: int) -> list[tuple[int, str]]:
    """A process and its descendants, with their command names; without epmd
    (Erlang's port mapper daemon, shared by every node on the machine)."""
    table = loadgen.scan_procs()
    found = [(p, table[p][0].decode(errors="replace")) for p in loadgen.tree(pid)(table)]
    return [(p, c) for p, c in found if c != "epmd"]


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2 : raw.rfind(b")") + 3] not in (b"Z", b"X")


def server_process(t: TargetServer) -> tuple[int, str]:
    """The server itself in the tree bench/run.py started (not a wrapper)."""
    assert t.proc is not None
    tree = _tree(t.proc.pid)
    for pid, comm in tree:
        if comm.startswith(SERVER_COMM[t.name]):
            return pid, comm
    raise RuntimeError(f"{t.name}: no {SERVER_COMM[t.name]} process in its tree {tree}")


def kill_target(t: TargetServer, seen: set[int]) -> dict[str, Any]:
    """``kill -9`` of the server process; the wrappers are left to notice."""
    pid, comm = server_process(t)
    tree = _tree(t.pid)
    seen.update(p for p, _c in tree)
    os.kill(pid, signal.SIGKILL)
    return {"pid": pid, "comm": comm, "tree": [f"{p} {c}" for p, c in tree]}


def _epmd_names() -> str:
    epmd = shutil.which("epmd")
    if not epmd:
        return ""
    out = subprocess.run([epmd, "-names"], capture_output=True, text=True, timeout=10)
    return out.stdout


def respawn(t: TargetServer) -> None:
    """Start a stopped target again with the same port, configuration and
    data folder, as bench/run.py's ``start`` does after provisioning (which
    cannot run twice: the accounts exist)."""
    if isinstance(t, Ejabberd):
        # ejabberdctl refuses to start while epmd still lists the node (and may
        # then kill epmd): wait for epmd to notice the node is gone
        node, deadline = t.node.split("@")[0], now() + 20
        while f"name {node} " in _epmd_names() and now() < deadline:
            time.sleep(0.05)
        t._spawn(t.ctl("foreground"), env=t.ctl_env(), cwd=t.work)
    elif isinstance(t, Prosody):
        t._spawn(["prosody", "--config", str(t.cfg), "-F"], cwd=t.work)
    elif isinstance(t, Embedded):
        t._spawn([str(BIN / "xmppd")], env=t.env())
    else:
        raise RuntimeError(f"no restart for {t.name}")
    assert t.proc is not None
    wait_port(t.port, t.proc, 120, t.name)


def restart_target(t: TargetServer, killed: Callable[[], int], seen: set[int]) -> dict[str, Any]:
    """Start the same server again on the same port, configuration and data
    folder (bench/run.py's ``start`` would provision the users again)."""
    out: dict[str, Any] = {}
    pid = killed()
    deadline = now() + 10
    while _alive(pid) and now() < deadline:
        time.sleep(0.01)
    out["killed_pid_gone"] = not _alive(pid)
    out["gone_at"] = now()
    old = t.proc
    assert old is not None
    try:
        old.wait(10)  # the wrappers (ejabberdctl's shell) end with the server
        out["wrapper_ended_by_itself"] = True
    except subprocess.TimeoutExpired:
        out["wrapper_ended_by_itself"] = False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(old.pid, signal.SIGKILL)
        old.wait(10)
    left = [p for p in seen if _alive(p)]
    if left:
        out["leftovers_killed"] = left
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
    if t.log_file is not None:
        t.log_file.close()
    respawn(t)
    out["new_pid"] = server_process(t)[0]
    return out


def run_target(
    name: str, plan: Plan, work: Path, cert: Path, key: Path, raw: Path
) -> dict[str, Any]:
    """Start ``name``, measure, and stop it whatever happens."""
    t = CLASSES[name](work, cert, key, raw)
    out: dict[str, Any] = {"target": name, "label": t.label}
    why = t.unavailable()
    if why:
        log(f"{name}: not measured: {why}")
        out.update(available=False, reason=why)
        return out
    t.muc = plan.occupants + 2  # the peers get their MUC service (bench/run.py)
    if isinstance(t, EmbeddedKeep):
        t.history = plan.messages
    users = Users(plain=list(plan.users), presence=[], contacts=[])
    seen: set[int] = set()
    killed: list[int] = []
    try:
        log(f"{name}: starting, {len(plan.users)} accounts")
        with history_config(plan.messages) as keep:
            t.start(users)
        _check_history_config(t, keep)
        # a clean stop and start before anything is measured: the accounts then
        # predate the server's run, as they would in use (ejabberd keeps the
        # last seconds of writes to its dets tables in memory: accounts created
        # just before a kill -9 are lost, which is not what this measures)
        if t.proc is not None:
            seen.update(p for p, _c in _tree(t.proc.pid))
        t0 = now()
        t.stop()
        respawn(t)
        out["clean_restart_s"] = round(now() - t0, 2)
        out.update(available=True, version=t.version(), port=t.port)
        log(f"{name}: {out['version']} on {t.where()}")

        def kill() -> dict[str, Any]:
            info = kill_target(t, seen)
            killed.append(info["pid"])
            return info

        def restart() -> dict[str, Any]:
            info = restart_target(t, lambda: killed[-1], seen)
            if t.proc is not None:
                seen.update(p for p, _c in _tree(t.proc.pid))
            return info

        out.update(measure_server("127.0.0.1", t.port, kill, restart, plan))
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        log(f"{name}: failed: {out['error']}")
    finally:
        if t.proc is not None and t.proc.poll() is None:
            seen.update(p for p, _c in _tree(t.proc.pid))
        if t.proc is not None:
            out["server_pids"] = sorted(seen | {t.proc.pid})
        t.stop()
        deadline = now() + 10
        while any(_alive(p) for p in seen) and now() < deadline:
            time.sleep(0.05)
        left = sorted(p for p in seen if _alive(p))
        out["stopped"] = not left and (t.proc is None or t.proc.poll() is not None)
        if left:
            out["left_running"] = left
            for p in left:  # never leave a server behind
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
    return out


# ------------------------------------------------------------------ reporting


def _get(d: dict[str, Any], path: str) -> Any:
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _s(v: Any) -> str:
    return "-" if v is None else f"{v:.2f} s"


def _yes(v: Any) -> str:
    return "-" if v is None else ("yes" if v is True else "no" if v is False else str(v))


def _row_messages(r: dict[str, Any]) -> str:
    e = r.get("exchange")
    if not e:
        return "-"
    return (
        f"{e['echoed']}/{e['sent']} echoed; "
        f"{e['copies_delivered']}/{e['copies_expected']} copies delivered"
    )


def _row_sent_before(r: dict[str, Any]) -> str:
    s = _get(r, "after.stanzas_before_drop")
    if s is None:
        return "-"
    if s["count"] == 0:
        return "nothing"
    return f"{s['count']} stanzas: " + ", ".join(f"{k} x{v}" for k, v in s["kinds"].items())


def _row_dropped(r: dict[str, Any]) -> str:
    c = _get(r, "after.connections")
    if c is None:
        return "-"
    if not c["dropped"]:
        return f"no (0/{c['occupants']})"
    how = "; ".join(c["how"])
    return f"yes, {c['dropped']}/{c['occupants']} within {c['drop_ms_max']:.0f} ms ({how})"


def _row_occupants(r: dict[str, Any]) -> str:
    info = _get(r, "after.observer.disco_info") or {}
    items = _get(r, "after.observer.disco_items") or {}
    join = _get(r, "after.observer.join") or {}
    parts = []
    if "occupants" in info:
        parts.append(f"disco#info: {info['occupants']}")
    elif info:
        parts.append(f"disco#info: {info.get('error')}")
    if "items" in items:
        parts.append(f"disco#items: {len(items['items'])}")
    elif items:
        parts.append(f"disco#items: {items.get('error')}")
    if join.get("ok"):
        parts.append(f"announced on join: {len(join['stayed'])}")
    elif join:
        parts.append(f"join: {join.get('error')}")
    n = r.get("occupants", 0)
    return f"{'; '.join(parts)} (of {n})" if parts else "-"


def _row_config(r: dict[str, Any]) -> str:
    s = _get(r, "after.stranger")
    info = _get(r, "after.observer.disco_info") or {}
    if s is None:
        return "-"
    if s.get("error") == "registration-required":
        head = "yes: non-member refused (registration-required)"
    elif s.get("ok"):
        head = f"NO: a non-member joined (codes {','.join(s['codes']) or '-'})"
    else:
        head = f"? non-member: {s.get('error')}"
    if "persistent" in info:
        head += (
            f"; disco#info persistent {_yes(info['persistent'])},"
            f" members-only {_yes(info['members_only'])}"
        )
    return head


def _row_history(r: dict[str, Any]) -> str:
    rj = _get(r, "after.rejoin") or {}
    if "history_of_ours" not in rj:
        return "-"
    extra = " (room re-created: 201)" if rj.get("room_recreated") else ""
    return f"{rj['history_of_ours']}/{r.get('messages')}{extra}"


def _row_killed(r: dict[str, Any]) -> str:
    k = r.get("kill")
    if not k:
        return "-"
    rs = r.get("restart") or {}
    if rs.get("killed_pid_gone") is False:
        return f"{k['comm']} (pid {k['pid']}), STILL ALIVE 10 s later"
    gone = rs.get("killed_gone_s")
    return f"{k['comm']} (pid {k['pid']})" + (
        f", gone after {gone:.2f} s" if gone is not None else ""
    )


def _row_rejoin(r: dict[str, Any]) -> str:
    rj = _get(r, "after.rejoin") or {}
    if "echo_s" in rj:
        return _s(rj["echo_s"])
    return rj.get("echo_error") or rj.get("error") or "-"


ROWS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("server", lambda r: r.get("version") or r.get("reason") or "-"),
    ("messages before the kill", _row_messages),
    ("process killed (kill -9)", _row_killed),
    ("server sent occupants anything before dying", _row_sent_before),
    ("clients' connections dropped", _row_dropped),
    ("port answers a stream header again after kill", lambda r: _s(_get(r, "after.listening_s"))),
    ("a client can log in again after kill", lambda r: _s(_get(r, "after.observer.login_s"))),
    ("rejoin done after kill", lambda r: _s(_get(r, "after.rejoin.join_s"))),
    ("rejoin + message echoed after kill", _row_rejoin),
    ("occupants still in the room without rejoining", _row_occupants),
    ("configuration survived (members-only)", _row_config),
    ("history a rejoining client receives (of ours)", _row_history),
    (
        "bookmark with autojoin (private XML) still stored",
        lambda r: _yes(_get(r, "after.rejoin.bookmark_autojoin")),
    ),
    ("server stopped by the script", lambda r: _yes(r.get("stopped"))),
]


def markdown(run: dict[str, Any]) -> str:
    targets = run["targets"]
    lines = [
        "| measure | " + " | ".join(t["label"] for t in targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for label, fn in ROWS:
        cells = []
        for t in targets:
            if not t.get("available"):
                cells.append("not measured" if label != "server" else t.get("reason", "-"))
            elif t.get("error") and label == "server":
                cells.append(f"{t.get('version', '')}; FAILED: {t['error']}")
            else:
                cells.append(fn(t))
        lines.append(f"| {label} | " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


NOTES = """\
Times are from the kill -9; the script restarts the server at once (no
supervisor delay), so they are the server's own restart and recovery.
Nothing tells an occupant that the room went away: its connection drops, and
it is back in the room only when its client rejoins by itself, from its own
memory of joined rooms or its bookmarks (autojoin, XEP-0048/XEP-0402); that
path is the client's (observed, not measured: the bookmark row only checks
the server kept it)."""


# ------------------------------------------------------------------- main


def _on_term(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: servers are stopped


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--targets", default=",".join(TARGETS), help="comma separated: " + ",".join(TARGETS)
    )
    p.add_argument("--occupants", type=int, default=20, help="occupants in the room (20)")
    p.add_argument("--messages", type=int, default=30, help="messages posted before the kill (30)")
    p.add_argument(
        "--recovery-timeout",
        type=float,
        default=150.0,
        help="seconds after the kill for logins and the room to come back (150)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds between the last message and the kill (0: at once, a busy room)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON (bench/results)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    targets = [x for x in a.targets.split(",") if x]
    bad = [x for x in targets if x not in TARGETS]
    if bad or not targets:
        print(f"unknown target: {', '.join(bad) or '(none)'}", file=sys.stderr)
        return 2
    if a.occupants < 2 or a.messages < 1:
        print("--occupants must be at least 2 and --messages at least 1", file=sys.stderr)
        return 2
    if os.geteuid() != 0 and any(t != "embedded" for t in targets):
        print(
            "run as root: Prosody runs with run_as_root, ejabberd as its own user", file=sys.stderr
        )
        return 2
    old_term = signal.signal(signal.SIGTERM, _on_term)
    try:
        return _main(a, targets)
    finally:
        signal.signal(signal.SIGTERM, old_term)


def _main(a: argparse.Namespace, targets: list[str]) -> int:
    loadgen.raise_nofile()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir: Path = a.out
    raw = out_dir / "raw" / f"muc-restart-{stamp}"
    raw.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="xmppd-muc-restart-"))
    work.chmod(0o755)  # ejabberd runs as its own user
    from services.platform.tls import ensure_self_signed

    cert, key = work / "cert.pem", work / "key.pem"
    ensure_self_signed(cert, key, [DOMAIN])
    key.chmod(0o644)
    plan = Plan(
        occupants=a.occupants,
        messages=a.messages,
        users=[f"u{i}" for i in range(a.occupants + 2)],
        recovery_timeout=a.recovery_timeout,
        settle=a.settle,
    )
    run_info: dict[str, Any] = {
        "stamp": stamp,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": bench_run.machine_info(),
        "occupants": a.occupants,
        "messages": a.messages,
        "settle_s": a.settle,
        "targets": [],
    }
    t0 = now()
    try:
        for name in targets:
            run_info["targets"].append(run_target(name, plan, work, cert, key, raw))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    run_info["wall_s"] = round(now() - t0, 1)
    path = out_dir / f"muc-restart-{stamp}.json"
    path.write_text(json.dumps(run_info, indent=1) + "\n")
    print()
    print(markdown(run_info))
    print()
    print(NOTES)
    print()
    with contextlib.suppress(ValueError):
        path = path.relative_to(ROOT)
    log(f"results: {path}; server logs: {raw}; total {run_info['wall_s']}s")
    failed = [
        t["target"] for t in run_info["targets"] if t.get("error") or not t.get("stopped", True)
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
