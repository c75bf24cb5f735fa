"""One multi-user chat room (XEP-0045), sans-IO.

A :class:`Room` takes a stanza addressed to it (the sender's real full JID
and the parsed element) and returns the stanzas to send, ``from`` and ``to``
set: it never does I/O, so the service that owns it decides where rooms live
and how the stanzas travel. A refusal is a :class:`StanzaError` the caller
bounces (from the JID the stanza was addressed to, as XEP-0045 wants).

State: the configuration and affiliations (what a persistent room keeps),
the occupants by nickname with their role, the subject and the recent
history (what an owner rebuilds).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree
from precis_i18n import get_profile

from ..xmpp import forms, ns
from ..xmpp.errors import StanzaCondition, StanzaError
from ..xmpp.forms import Field, Option
from ..xmpp.jid import JID

MUC = "http://jabber.org/protocol/muc"
MUC_USER = MUC + "#user"
MUC_ADMIN = MUC + "#admin"
MUC_OWNER = MUC + "#owner"
OCCUPANT_ID = "urn:xmpp:occupant-id:0"
#: archives (XEP-0313) and the ids of their messages (XEP-0359)
MAM = "urn:xmpp:mam:2"
SID = "urn:xmpp:sid:0"
ROOMCONFIG = MUC + "#roomconfig"
ROOMINFO = MUC + "#roominfo"
REQUEST = MUC + "#request"
REGISTER = MUC + "#register"
#: the disco#info node where a user finds its reserved nickname (7.12)
ROOMUSER_NODE = "x-roomuser-item"
#: who may send private messages in a room (muc#roomconfig_allowpm)
PM_POLICIES = ("anyone", "participants", "moderators", "none")

AFFILIATIONS = ("owner", "admin", "member", "none", "outcast")
ROLES = ("moderator", "participant", "visitor", "none")
_AFF_RANK = {"outcast": -1, "none": 0, "member": 1, "admin": 2, "owner": 3}
_ROLE_RANK = {"none": 0, "visitor": 1, "participant": 2, "moderator": 3}
#: RFC 8266 enforcement without case mapping: "Alice" stays "Alice"
_NICKNAME = get_profile("NicknameCasePreserved")
#: error conditions that say a stanza never reached its recipient (its client
#: or the link to its server is gone), as opposed to a live client refusing
#: what it got (Prosody draws the same line)
_UNREACHABLE = frozenset(
    {
        StanzaCondition.GONE,
        StanzaCondition.INTERNAL_SERVER_ERROR,
        StanzaCondition.ITEM_NOT_FOUND,
        StanzaCondition.JID_MALFORMED,
        StanzaCondition.RECIPIENT_UNAVAILABLE,
        StanzaCondition.REDIRECT,
        StanzaCondition.REMOTE_SERVER_NOT_FOUND,
        StanzaCondition.REMOTE_SERVER_TIMEOUT,
        StanzaCondition.SERVICE_UNAVAILABLE,
    }
)


def q(namespace: str, local: str) -> str:
    return f"{{{namespace}}}{local}"


def normalize_nick(nick: str) -> str:
    """A room nickname as the room keeps it: the RFC 8266 Nickname profile
    (non-ASCII spaces to U+0020, no leading or trailing spaces, one space
    for a run of them, NFKC), case preserved. Nicknames are compared in
    this form, so "bob  smith" and "bob smith" are one nickname. An empty
    nickname or one with control characters is jid-malformed (XEP-0045
    17.1: no empty or invisible nicknames)."""
    try:
        out: str = _NICKNAME.enforce(nick)
    except (UnicodeError, ValueError):
        raise StanzaError(StanzaCondition.JID_MALFORMED, "not a valid nickname") from None
    if len(out.encode()) > 1023:
        # it is the resourcepart of the occupant JID (RFC 7622 3.4)
        raise StanzaError(StanzaCondition.JID_MALFORMED, "the nickname is too long")
    return out


@dataclass(slots=True)
class RoomConfig:
    name: str = ""
    description: str = ""
    persistent: bool = False
    public: bool = True
    members_only: bool = False
    moderated: bool = False
    password: str = ""
    max_users: int = 200
    #: who may see occupants' real JIDs: "moderators" (semi-anonymous) or "anyone"
    whois: str = "moderators"
    history_length: int = 20
    change_subject: bool = False
    allow_invites: bool = False
    #: who may send private messages: anyone | participants | moderators | none
    allow_pm: str = "anyone"
    #: the discussions are logged to a public archive (muc#roomconfig_enablelogging):
    #: occupants are warned with status 170
    logging: bool = False


@dataclass(slots=True)
class Occupant:
    nick: str
    jid: JID  # the real full JID
    role: str
    presence: etree._Element  # the last available presence, as the occupant sent it


@dataclass(slots=True)
class _Past:
    element: etree._Element  # the groupchat message as broadcast (``to`` unset)
    when: float
    size: int


@dataclass(frozen=True, slots=True)
class _Forwarded:
    asker: JID  # the real JID that sent the IQ
    id: str | None  # its id
    nick: str  # the asker's nickname, where the answer is addressed
    target: JID  # the real JID the IQ went to: only it may answer


@dataclass(slots=True)
class Limits:
    max_users: int = 200
    max_history: int = 50


@dataclass
class Room:
    jid: JID  # the room's bare JID
    config: RoomConfig = field(default_factory=RoomConfig)
    #: bare JID -> affiliation (none is not stored)
    affiliations: dict[str, str] = field(default_factory=dict)
    #: bare JID -> its reserved nickname (7.10 registration; normalized)
    nicks: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    #: a room created by a join is locked until its owner configures it (XEP-0045 10.1)
    locked: bool = False
    subject: str = ""
    subject_by: str = ""
    clock: Callable[[], float] = time.time
    secret: bytes = b"occupant-id"
    occupants: dict[str, Occupant] = field(default_factory=dict)
    history: collections.deque[_Past] = field(default_factory=collections.deque)
    #: messages ever added to the history (what the service has stored is behind it)
    history_seq: int = 0
    #: changes of what a persistent room keeps (configuration, affiliations,
    #: subject): the service stores the room when this moved
    state_seq: int = 0
    #: IQs forwarded to occupants, by the id they were sent with: (asker, its id)
    forwarded: dict[str, _Forwarded] = field(default_factory=dict)
    destroyed: bool = False
    #: messages a persistent room archives (XEP-0313 section 5.1.2), as
    #: (stanza-id, stamp, sender's occupant JID, message): the service
    #: writes and clears them before the room's stanzas go out
    to_archive: list[tuple[str, float, str, etree._Element]] = field(default_factory=list)

    # ---- lookups ---------------------------------------------------------------

    def affiliation(self, jid: JID) -> str:
        return self.affiliations.get(str(jid.bare), "none")

    def occupant_of(self, jid: JID) -> Occupant | None:
        for occ in self.occupants.values():
            if occ.jid == jid:
                return occ
        return None

    @property
    def empty(self) -> bool:
        return not self.occupants

    def occupant_id(self, jid: JID) -> str:
        """XEP-0421: stable per real bare JID in this room, tells nothing about it."""
        mac = hmac.new(self.secret, f"{self.jid}\0{jid.bare}".encode(), hashlib.sha256)
        return mac.hexdigest()[:24]

    def _default_role(self, aff: str) -> str:
        if aff in ("owner", "admin"):
            return "moderator"
        if self.config.moderated and aff == "none":
            return "visitor"
        return "participant"

    def _nick_jid(self, nick: str) -> JID:
        return JID.make(self.jid.local, self.jid.domain, nick)

    def reserved_by(self, nick: str) -> str | None:
        """The bare JID that reserved ``nick`` (normalized), if any."""
        for bare, reserved in self.nicks.items():
            if reserved == nick:
                return bare
        return None

    def _check_nick_free(self, nick: str, frm: JID) -> None:
        """7.2.8, 7.6: a nickname another user is in the room under, or
        has reserved, is a conflict; the same user's is not."""
        other = self.occupants.get(nick)
        if other is not None and other.jid.bare != frm.bare:
            raise StanzaError(StanzaCondition.CONFLICT, "that nickname is in use")
        holder = self.reserved_by(nick)
        if holder is not None and holder != str(frm.bare):
            raise StanzaError(StanzaCondition.CONFLICT, "that nickname is reserved")

    # ---- presence ------------------------------------------------------------------

    def handle_presence(
        self, frm: JID, nick: str | None, el: etree._Element
    ) -> list[etree._Element]:
        typ = el.get("type")
        occ = self.occupant_of(frm)
        if typ == "error":
            return self._bounced(occ, el)
        if typ == "unavailable":
            if occ is None:
                return []
            return self._leave(occ, el)
        if typ is not None and typ != "available":
            return []  # subscriptions to a room mean nothing
        if not nick:
            # XEP-0045 7.2.1: a join without a nickname
            raise StanzaError(StanzaCondition.JID_MALFORMED, "a nickname is required")
        wanted = normalize_nick(nick)
        # 7.2.12, 7.6: status 210 tells the client that the nickname it has
        # is not the one it asked for
        renamed = wanted != nick
        if occ is None:
            return self._join(frm, wanted, el, renamed)
        if occ.nick != wanted:
            return self._change_nick(occ, wanted, el, renamed)
        occ.presence = el
        x = el.find(q(MUC, "x"))
        if x is not None:
            # a join from an occupant already in: a client that lost its
            # state (or the answer to its join) joins again and must get the
            # whole welcome, the subject last, or it waits for it forever
            others = [self._presence_of(o, to=occ) for o in self.occupants.values() if o is not occ]
            return [
                *others,
                *self._welcome(occ, x, joined=False, created=False, renamed=renamed),
            ]
        return self._broadcast_presence(occ)

    def _bounced(self, occ: Occupant | None, el: etree._Element) -> list[etree._Element]:
        """An error from an occupant's real JID is the bounce of something the
        room sent it: its client or the way to it is gone, so it leaves, the
        others told with status 333 (XEP-0045 11.1). Nothing goes to it (it
        would bounce again). An error a live client returns (it did not like
        a stanza) is no reason to remove it, and is dropped as before."""
        if occ is None:
            return []
        err = el.find(q(ns.CLIENT, "error"))
        conditions = [
            etree.QName(child).localname
            for child in (err if err is not None else ())
            if isinstance(child.tag, str)
            and etree.QName(child).namespace == ns.STANZAS_ERR
            and etree.QName(child).localname != "text"
        ]
        # an error without a condition is malformed: nothing tells the client
        # is alive, so it counts as gone (as in Prosody)
        if conditions and conditions[0] not in _UNREACHABLE:
            return []
        out = [
            self._unavailable(occ, o, None, ("333",))
            for o in self.occupants.values()
            if o is not occ
        ]
        self.occupants.pop(occ.nick, None)
        return out

    def _join(
        self, frm: JID, nick: str, el: etree._Element, renamed: bool = False
    ) -> list[etree._Element]:
        aff = self._admitted(frm)
        if self.config.members_only and aff == "none":
            raise StanzaError(StanzaCondition.REGISTRATION_REQUIRED, "members only")
        self._check_nick_free(nick, frm)
        existing = self.occupants.get(nick)
        if existing is not None:
            # another resource of the same user under its nickname: one
            # occupant per nickname here, the newer session takes it over
            del self.occupants[nick]
        x = el.find(q(MUC, "x"))
        if self.config.password and aff not in ("owner", "admin"):
            given = x.findtext(q(MUC, "password")) if x is not None else None
            if given != self.config.password:
                raise StanzaError(StanzaCondition.NOT_AUTHORIZED, "a password is required")
        max_users = min(self.config.max_users, self.limits.max_users)
        if len(self.occupants) >= max_users and aff not in ("owner", "admin"):
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE, "the room is full")
        occ = Occupant(nick, frm, self._default_role(aff), el)
        created = self.locked and aff == "owner" and not self.occupants
        out: list[etree._Element] = []
        # 7.2.3: the presence of every occupant already there, then its own
        for other in self.occupants.values():
            out.append(self._presence_of(other, to=occ))
        self.occupants[nick] = occ
        out.extend(self._welcome(occ, x, joined=True, created=created, renamed=renamed))
        return out

    def _welcome(
        self,
        occ: Occupant,
        x: etree._Element | None,
        joined: bool,
        created: bool,
        renamed: bool = False,
    ) -> list[etree._Element]:
        """Its presence to everyone (110 to itself), then its history and the subject."""
        out = self._broadcast_presence(occ, joined=joined, created=created, renamed=renamed)
        out.extend(self._history_for(occ, x.find(q(MUC, "history")) if x is not None else None))
        # 7.2.15: the subject comes last, even when empty
        subj = self._message(
            self._nick_jid(self.subject_by) if self.subject_by else self.jid, occ.jid, "groupchat"
        )
        etree.SubElement(subj, q(ns.CLIENT, "subject")).text = self.subject
        out.append(subj)
        return out

    def _leave(
        self, occ: Occupant, el: etree._Element, codes: tuple[str, ...] = ()
    ) -> list[etree._Element]:
        out = []
        for other in list(self.occupants.values()):
            out.append(self._unavailable(occ, other, el, codes))
        self.occupants.pop(occ.nick, None)
        return out

    def _change_nick(
        self, occ: Occupant, nick: str, el: etree._Element, renamed: bool = False
    ) -> list[etree._Element]:
        self._check_nick_free(nick, occ.jid)
        out = []
        # 7.6: unavailable with 303 and the new nick, then available under it
        for o in self.occupants.values():
            p = self._unavailable(occ, o, None, ("303",))
            item = p.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
            assert item is not None
            item.set("nick", nick)
            out.append(p)
        del self.occupants[occ.nick]
        occ.nick = nick
        occ.presence = el
        self.occupants[nick] = occ
        out.extend(self._broadcast_presence(occ, renamed=renamed))
        return out

    def _broadcast_presence(
        self, occ: Occupant, joined: bool = False, created: bool = False, renamed: bool = False
    ) -> list[etree._Element]:
        out = []
        for other in self.occupants.values():
            codes: list[str] = []
            if other is occ:
                codes.append("110")
                if joined and self.config.whois == "anyone":
                    codes.append("100")
                if joined and self.config.logging:
                    # 7.2.12: warn who enters that the discussion is logged
                    codes.append("170")
                if created:
                    codes.append("201")
                if renamed:
                    codes.append("210")
            out.append(self._presence_of(occ, to=other, codes=codes))
        return out

    def _sees_jids(self, viewer: Occupant) -> bool:
        return self.config.whois == "anyone" or viewer.role == "moderator"

    def _presence_of(
        self, occ: Occupant, to: Occupant, codes: list[str] | tuple[str, ...] = ()
    ) -> etree._Element:
        p = etree.Element(q(ns.CLIENT, "presence"), nsmap={None: ns.CLIENT})
        for child in occ.presence:
            if isinstance(child.tag, str) and child.tag not in (q(MUC, "x"), q(MUC_USER, "x")):
                p.append(_copy(child))
        p.set("from", str(self._nick_jid(occ.nick)))
        p.set("to", str(to.jid))
        x = etree.SubElement(p, q(MUC_USER, "x"), nsmap={None: MUC_USER})
        item = etree.SubElement(x, q(MUC_USER, "item"))
        item.set("affiliation", self.affiliation(occ.jid))
        item.set("role", occ.role)
        if self._sees_jids(to) or to is occ:
            item.set("jid", str(occ.jid))
        for code in codes:
            etree.SubElement(x, q(MUC_USER, "status")).set("code", code)
        etree.SubElement(p, q(OCCUPANT_ID, "occupant-id"), nsmap={None: OCCUPANT_ID}).set(
            "id", self.occupant_id(occ.jid)
        )
        return p

    def _unavailable(
        self,
        occ: Occupant,
        to: Occupant,
        el: etree._Element | None,
        codes: tuple[str, ...] = (),
        reason: str | None = None,
        actor: str | None = None,
    ) -> etree._Element:
        p = etree.Element(q(ns.CLIENT, "presence"), nsmap={None: ns.CLIENT})
        p.set("type", "unavailable")
        p.set("from", str(self._nick_jid(occ.nick)))
        p.set("to", str(to.jid))
        if el is not None:
            status = el.find(q(ns.CLIENT, "status"))
            if status is not None:
                p.append(_copy(status))
        x = etree.SubElement(p, q(MUC_USER, "x"), nsmap={None: MUC_USER})
        item = etree.SubElement(x, q(MUC_USER, "item"))
        item.set("affiliation", self.affiliation(occ.jid))
        item.set("role", "none")
        if self._sees_jids(to) or to is occ:
            item.set("jid", str(occ.jid))
        if actor is not None:
            etree.SubElement(item, q(MUC_USER, "actor")).set("nick", actor)
        if reason:
            etree.SubElement(item, q(MUC_USER, "reason")).text = reason
        all_codes = list(codes)
        if to is occ:
            all_codes.append("110")
        for code in all_codes:
            etree.SubElement(x, q(MUC_USER, "status")).set("code", code)
        etree.SubElement(p, q(OCCUPANT_ID, "occupant-id"), nsmap={None: OCCUPANT_ID}).set(
            "id", self.occupant_id(occ.jid)
        )
        return p

    # ---- history -------------------------------------------------------------------

    def _history_for(self, occ: Occupant, spec: etree._Element | None) -> list[etree._Element]:
        """7.2.14: the history asked for (maxstanzas, maxchars, seconds, since)."""
        items = list(self.history)
        if spec is not None:
            now = self.clock()
            if spec.get("seconds") is not None:
                secs = _nonneg(spec.get("seconds"))
                items = [h for h in items if now - h.when <= secs]
            if spec.get("since") is not None:
                from ..xmpp.timefmt import parse_datetime

                try:
                    since = parse_datetime(spec.get("since") or "")
                except ValueError:
                    since = None
                if since is not None:
                    items = [h for h in items if h.when >= since]
            if spec.get("maxstanzas") is not None:
                n = _nonneg(spec.get("maxstanzas"))
                items = items[len(items) - n :] if n else []
            if spec.get("maxchars") is not None:
                budget = _nonneg(spec.get("maxchars"))
                kept: list[_Past] = []
                for h in reversed(items):
                    if h.size > budget:
                        break
                    budget -= h.size
                    kept.append(h)
                items = list(reversed(kept))
        out = []
        for h in items:
            m = _copy(h.element)
            m.set("to", str(occ.jid))
            delay = etree.SubElement(m, q(ns.DELAY, "delay"), nsmap={None: ns.DELAY})
            delay.set("from", str(self.jid))
            delay.set("stamp", _stamp(h.when))
            out.append(m)
        return out

    # ---- messages ------------------------------------------------------------------

    def handle_message(
        self, frm: JID, nick: str | None, el: etree._Element
    ) -> list[etree._Element]:
        typ = el.get("type") or "normal"
        occ = self.occupant_of(frm)
        if typ == "error":
            return self._bounced(occ, el)
        if nick is None:
            form = forms.find_form(el, REQUEST)
            if form is not None:
                return self._voice_request(frm, occ, form)
            x = el.find(q(MUC_USER, "x"))
            if x is not None and (
                x.find(q(MUC_USER, "invite")) is not None
                or x.find(q(MUC_USER, "decline")) is not None
            ):
                return self._invite_or_decline(frm, occ, x)
            if typ != "groupchat":
                raise StanzaError(StanzaCondition.BAD_REQUEST, "messages to the room are groupchat")
            if occ is None:
                raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "you are not in the room")
            subject = el.find(q(ns.CLIENT, "subject"))
            if subject is not None and el.find(q(ns.CLIENT, "body")) is None:
                return self._set_subject(occ, subject.text or "")
            if occ.role == "visitor":
                raise StanzaError(StanzaCondition.FORBIDDEN, "visitors have no voice here")
            return self._groupchat(occ, el)
        # a private message to one occupant (7.5)
        if occ is None:
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "you are not in the room")
        if typ == "groupchat":
            raise StanzaError(StanzaCondition.BAD_REQUEST, "groupchat goes to the room")
        target = self.occupants.get(nick)
        if target is None:
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such occupant")
        allowed = self.config.allow_pm
        if (
            allowed == "none"
            or (allowed == "participants" and occ.role not in ("participant", "moderator"))
            or (allowed == "moderators" and occ.role != "moderator")
        ):
            raise StanzaError(StanzaCondition.FORBIDDEN, "private messages are not allowed")
        m = _copy(el)
        m.set("from", str(self._nick_jid(occ.nick)))
        m.set("to", str(target.jid))
        # 7.5: <x xmlns='muc#user'/> marks a private message
        etree.SubElement(m, q(MUC_USER, "x"), nsmap={None: MUC_USER})
        self._stamp_occupant_id(m, occ)
        return [m]

    def _groupchat(self, occ: Occupant, el: etree._Element) -> list[etree._Element]:
        m = _copy(el)
        for old in m.findall(q(OCCUPANT_ID, "occupant-id")):
            m.remove(old)  # 3.1 of XEP-0421: never the sender's own
        m.set("from", str(self._nick_jid(occ.nick)))
        m.attrib.pop("to", None)
        self._stamp_occupant_id(m, occ)
        self._archive(m)
        length = min(self.config.history_length, self.limits.max_history)
        if length > 0 and m.find(q(ns.CLIENT, "body")) is not None:
            size = len(etree.tostring(m))
            self.history.append(_Past(m, self.clock(), size))
            self.history_seq += 1
            while len(self.history) > length:
                self.history.popleft()
        return self._to_all(m)

    def _to_all(self, m: etree._Element) -> list[etree._Element]:
        out = []
        for other in self.occupants.values():
            c = _copy(m)
            c.set("to", str(other.jid))
            out.append(c)
        return out

    def _voice_request(
        self, frm: JID, occ: Occupant | None, form: etree._Element
    ) -> list[etree._Element]:
        """7.13 and 8.6: a visitor asks for voice, the moderators get the
        request form; a moderator's submitted form with request_allow grants it."""
        if occ is None:
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "you are not in the room")
        values = _first_values(form)
        if occ.role == "moderator" and "muc#request_allow" in values:
            target = self.occupants.get(values.get("muc#roomnick", ""))
            if target is None:
                raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such occupant")
            if values["muc#request_allow"] not in ("1", "true") or target.role != "visitor":
                return []
            target.role = "participant"
            return self._broadcast_presence(target)
        if occ.role != "visitor" or values.get("muc#role") != "participant":
            return []  # nothing to ask for
        out = []
        for mod in [o for o in self.occupants.values() if o.role == "moderator"]:
            m = self._message(self.jid, mod.jid, None)
            jid = str(occ.jid) if self._sees_jids(mod) else ""
            fields = [
                Field("muc#role", "list-single", "Requested role", ["participant"]),
                Field("muc#jid", "jid-single", "User ID", [jid]),
                Field("muc#roomnick", "text-single", "Room nickname", [occ.nick]),
                Field("muc#request_allow", "boolean", "Grant voice to this person?", ["0"]),
            ]
            m.append(forms.build_form("form", REQUEST, fields, title="Voice request"))
            out.append(m)
        return out

    def _set_subject(self, occ: Occupant, text: str) -> list[etree._Element]:
        if not (
            occ.role == "moderator" or (self.config.change_subject and occ.role == "participant")
        ):
            raise StanzaError(StanzaCondition.FORBIDDEN, "you may not change the subject")
        self.subject = text
        self.subject_by = occ.nick
        self.state_seq += 1
        m = self._message(self._nick_jid(occ.nick), None, "groupchat")
        etree.SubElement(m, q(ns.CLIENT, "subject")).text = text
        self._archive(m)
        return self._to_all(m)

    def _invite_or_decline(
        self, frm: JID, occ: Occupant | None, x: etree._Element
    ) -> list[etree._Element]:
        out = []
        invite = x.find(q(MUC_USER, "invite"))
        if invite is not None:
            if occ is None:
                raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "you are not in the room")
            aff = self.affiliation(frm)
            if (
                self.config.members_only
                and not self.config.allow_invites
                and aff not in ("owner", "admin")
            ):
                raise StanzaError(StanzaCondition.FORBIDDEN, "you may not invite here")
            to = _jid_attr(invite, "to")
            if self.config.members_only and self.affiliation(to) == "none":
                # 7.8.2: an invitation to a members-only room makes a member
                self.affiliations[str(to.bare)] = "member"
                self.state_seq += 1
            m = self._message(self.jid, to, None)
            ux = etree.SubElement(m, q(MUC_USER, "x"), nsmap={None: MUC_USER})
            inv = etree.SubElement(ux, q(MUC_USER, "invite"))
            inv.set("from", str(frm))
            reason = invite.findtext(q(MUC_USER, "reason"))
            if reason:
                etree.SubElement(inv, q(MUC_USER, "reason")).text = reason
            if self.config.password:
                etree.SubElement(ux, q(MUC_USER, "password")).text = self.config.password
            out.append(m)
        decline = x.find(q(MUC_USER, "decline"))
        if decline is not None:
            to = _jid_attr(decline, "to")
            m = self._message(self.jid, to, None)
            ux = etree.SubElement(m, q(MUC_USER, "x"), nsmap={None: MUC_USER})
            dec = etree.SubElement(ux, q(MUC_USER, "decline"))
            dec.set("from", str(frm.bare))
            reason = decline.findtext(q(MUC_USER, "reason"))
            if reason:
                etree.SubElement(dec, q(MUC_USER, "reason")).text = reason
            out.append(m)
        return out

    def _message(self, frm: JID, to: JID | None, typ: str | None) -> etree._Element:
        m = etree.Element(q(ns.CLIENT, "message"), nsmap={None: ns.CLIENT})
        m.set("from", str(frm))
        if to is not None:
            m.set("to", str(to))
        if typ is not None:
            m.set("type", typ)
        return m

    def _archive(self, m: etree._Element) -> None:
        """A persistent room keeps its messages and subject changes in its
        archive (XEP-0313 5.1.2), each under a stanza-id (XEP-0359) that
        every occupant's copy carries; a sender's own claim is removed."""
        for old in m.findall(q(SID, "stanza-id")):
            if old.get("by") == str(self.jid):
                m.remove(old)
        if not self.config.persistent or self.locked:
            return
        sid = secrets.token_urlsafe(12)
        etree.SubElement(m, q(SID, "stanza-id"), nsmap={None: SID}, by=str(self.jid), id=sid)
        self.to_archive.append((sid, self.clock(), m.get("from") or "", _copy(m)))

    def may_read_archive(self, jid: JID) -> bool:
        """Who may query the archive: in a members-only room its members (and
        admins and owners), elsewhere anyone not banned (Prosody's and
        ejabberd's rule: what a visitor could have read by joining)."""
        aff = self.affiliation(jid)
        if aff == "outcast":
            return False
        return not self.config.members_only or aff in ("member", "admin", "owner")

    def _stamp_occupant_id(self, m: etree._Element, occ: Occupant) -> None:
        etree.SubElement(m, q(OCCUPANT_ID, "occupant-id"), nsmap={None: OCCUPANT_ID}).set(
            "id", self.occupant_id(occ.jid)
        )

    # ---- IQs between occupants ----------------------------------------------------------

    def forward_iq(self, frm: JID, nick: str, iq: etree._Element) -> list[etree._Element]:
        """An IQ to ``room/nick``: to that occupant's real JID, from the
        sender's occupant JID, under an id of the room's (the answer comes
        back to the room, which must know whose it is)."""
        occ = self.occupant_of(frm)
        if occ is None:
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "you are not in the room")
        target = self.occupants.get(nick)
        if target is None:
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such occupant")
        if len(self.forwarded) >= 1000:
            # answers that never came: the oldest are forgotten
            for key in list(self.forwarded)[:100]:
                del self.forwarded[key]
        fid = secrets.token_hex(8)
        self.forwarded[fid] = _Forwarded(frm, iq.get("id"), occ.nick, target.jid)
        out = _copy(iq)
        out.set("id", fid)
        out.set("from", str(self._nick_jid(occ.nick)))
        out.set("to", str(target.jid))
        return [out]

    def iq_answer(self, frm: JID, nick: str, iq: etree._Element) -> list[etree._Element]:
        """The answer to a forwarded IQ, back to who asked; anything else
        addressed to an occupant JID this way is dropped."""
        fid = iq.get("id") or ""
        pending = self.forwarded.get(fid)
        if pending is None or pending.target != frm or pending.nick != nick:
            return []
        del self.forwarded[fid]
        answerer = self.occupant_of(frm)
        out = _copy(iq)
        if pending.id is None:
            out.attrib.pop("id", None)
        else:
            out.set("id", pending.id)
        out.set("from", str(self._nick_jid(answerer.nick)) if answerer else str(self.jid))
        out.set("to", str(pending.asker))
        return [out]

    # ---- administration (10.x, 9.x, 8.x) --------------------------------------------

    def admin_get(self, frm: JID, query: etree._Element) -> etree._Element:
        """muc#admin get: the list of one affiliation or one role."""
        item = query.find(q(MUC_ADMIN, "item"))
        if item is None:
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        occ = self.occupant_of(frm)
        aff_of_asker = self.affiliation(frm)
        out = etree.Element(q(MUC_ADMIN, "query"), nsmap={None: MUC_ADMIN})
        if item.get("affiliation") is not None:
            want = item.get("affiliation")
            if want not in AFFILIATIONS or want == "none":
                raise StanzaError(StanzaCondition.BAD_REQUEST)
            if _AFF_RANK[aff_of_asker] < _AFF_RANK["admin"]:
                raise StanzaError(StanzaCondition.FORBIDDEN)
            for bare, aff in sorted(self.affiliations.items()):
                if aff == want:
                    it = etree.SubElement(out, q(MUC_ADMIN, "item"), affiliation=aff, jid=bare)
                    if bare in self.nicks:
                        # 17.4: affiliation lists SHOULD carry the reserved nick
                        it.set("nick", self.nicks[bare])
            return out
        want = item.get("role")
        if want not in ("moderator", "participant", "visitor"):
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        if occ is None or occ.role != "moderator":
            raise StanzaError(StanzaCondition.FORBIDDEN)
        for o in self.occupants.values():
            if o.role == want:
                etree.SubElement(
                    out, q(MUC_ADMIN, "item"), role=o.role, nick=o.nick, jid=str(o.jid),
                    affiliation=self.affiliation(o.jid),
                )  # fmt: skip
        return out

    def admin_set(self, frm: JID, query: etree._Element) -> list[etree._Element]:
        """muc#admin set: roles (kick, voice, moderator) and affiliations (ban,
        member, admin, owner), each item checked before any is applied."""
        items = query.findall(q(MUC_ADMIN, "item"))
        if not items:
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        actor = self.occupant_of(frm)
        actor_aff = self.affiliation(frm)
        changes: list[tuple[str, etree._Element]] = []
        for item in items:
            if item.get("role") is not None:
                self._check_role_change(actor, actor_aff, item)
                changes.append(("role", item))
            elif item.get("affiliation") is not None:
                self._check_affiliation_change(frm, actor_aff, item)
                changes.append(("affiliation", item))
            else:
                raise StanzaError(StanzaCondition.BAD_REQUEST)
        out: list[etree._Element] = []
        for kind, item in changes:
            reason = item.findtext(q(MUC_ADMIN, "reason"))
            actor_nick = actor.nick if actor is not None else None
            if kind == "role":
                out += self._apply_role(item, reason, actor_nick)
            else:
                out += self._apply_affiliation(item, reason, actor_nick)
        return out

    def _check_role_change(
        self, actor: Occupant | None, actor_aff: str, item: etree._Element
    ) -> None:
        role, nick = item.get("role"), item.get("nick")
        if role not in ROLES or not nick:
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        if actor is None or actor.role != "moderator":
            raise StanzaError(StanzaCondition.FORBIDDEN, "only moderators change roles")
        target = self.occupants.get(nick)
        if target is None:
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "no such occupant")
        target_aff = self.affiliation(target.jid)
        if role == "moderator" and _AFF_RANK[actor_aff] < _AFF_RANK["admin"]:
            raise StanzaError(StanzaCondition.NOT_ALLOWED, "only admins grant moderation")
        if _AFF_RANK[target_aff] >= _AFF_RANK["admin"] and role != "moderator":
            # 8.2, 8.4: an admin or owner cannot be kicked or silenced
            raise StanzaError(StanzaCondition.NOT_ALLOWED, "that occupant is an admin or owner")
        if (
            target.role == "moderator"
            and _AFF_RANK[actor_aff] < _AFF_RANK["admin"]
            and target is not actor
        ):
            raise StanzaError(StanzaCondition.NOT_ALLOWED)

    def _check_affiliation_change(self, frm: JID, actor_aff: str, item: etree._Element) -> None:
        aff = item.get("affiliation")
        if aff not in AFFILIATIONS:
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        target = self._item_jid(item)
        if target is None:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "a jid or a nick is required")
        current = self.affiliation(target)
        if actor_aff == "owner":
            if current == "owner" and aff != "owner" and target.bare == frm.bare:
                owners = [b for b, a in self.affiliations.items() if a == "owner"]
                if len(owners) <= 1:
                    # 10.6: the last owner stays
                    raise StanzaError(StanzaCondition.CONFLICT, "a room needs an owner")
            return
        if actor_aff == "admin":
            if aff in ("owner", "admin") or current in ("owner", "admin"):
                raise StanzaError(StanzaCondition.NOT_ALLOWED, "owners decide about admins")
            return
        raise StanzaError(StanzaCondition.FORBIDDEN, "only admins and owners change affiliations")

    def _item_jid(self, item: etree._Element) -> JID | None:
        if item.get("jid"):
            return _jid_attr(item, "jid").bare
        nick = item.get("nick")
        if nick and nick in self.occupants:
            return self.occupants[nick].jid.bare
        return None

    def _apply_role(
        self, item: etree._Element, reason: str | None, actor: str | None
    ) -> list[etree._Element]:
        target = self.occupants[item.get("nick") or ""]
        role = item.get("role") or "none"
        if role == "none":
            return self._remove(target, ("307",), reason, actor)
        target.role = role
        return self._broadcast_presence(target)

    def apply_affiliation(
        self, item: etree._Element, reason: str | None, actor: str | None
    ) -> list[etree._Element]:
        """Apply an affiliation change already allowed (the service's own
        administration skips the owner's checks)."""
        return self._apply_affiliation(item, reason, actor)

    def _apply_affiliation(
        self, item: etree._Element, reason: str | None, actor: str | None
    ) -> list[etree._Element]:
        target = self._item_jid(item)
        assert target is not None
        aff = item.get("affiliation") or "none"
        bare = str(target.bare)
        if aff == "none":
            self.affiliations.pop(bare, None)
        else:
            self.affiliations[bare] = aff
        if aff in ("none", "outcast"):
            # a reservation is a registration with the room, which is
            # membership (9.5); outcasts SHOULD NOT have one (17.4)
            self.nicks.pop(bare, None)
        self.state_seq += 1
        out: list[etree._Element] = []
        for occ in [o for o in self.occupants.values() if o.jid.bare == target.bare]:
            if aff == "outcast":
                out += self._remove(occ, ("301",), reason, actor)
            elif self.config.members_only and aff == "none":
                out += self._remove(occ, ("321",), reason, actor)
            else:
                occ.role = (
                    self._default_role(aff) if aff != "none" or occ.role != "visitor" else occ.role
                )
                out += self._broadcast_presence(occ)
        return out

    def _remove(
        self, occ: Occupant, codes: tuple[str, ...], reason: str | None, actor: str | None
    ) -> list[etree._Element]:
        out = [
            self._unavailable(occ, o, None, codes, reason, actor) for o in self.occupants.values()
        ]
        self.occupants.pop(occ.nick, None)
        return out

    # ---- registration (7.10) ---------------------------------------------------------

    def _may_register(self, frm: JID) -> str:
        """Whether ``frm`` may register, and its affiliation. Registering
        makes a member at once (an admin's approval, 9.9, is optional and not
        done). In an open room anyone not banned may register; in a
        members-only room only who has an affiliation already (to reserve a
        nickname), or registering would go around the member list: others
        get not-allowed, the error 7.10 names for a user the room does not
        let register. XEP-0045 registers no configuration field for this."""
        aff = self._admitted(frm)
        if self.config.members_only and aff == "none":
            raise StanzaError(StanzaCondition.NOT_ALLOWED, "only admins add members here")
        return aff

    def _admitted(self, frm: JID) -> str:
        """``frm``'s affiliation, unless the room is closed to it: a room not
        yet configured is there for its owner only (10.1.1), an outcast is
        banned."""
        aff = self.affiliation(frm)
        if self.locked and aff != "owner":
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, "the room is locked")
        if aff == "outcast":
            raise StanzaError(StanzaCondition.FORBIDDEN, "you are banned from this room")
        return aff

    def register_get(self, frm: JID) -> etree._Element:
        """jabber:iq:register get: the user's registration if it has one,
        else the muc#register form to fill in."""
        self._may_register(frm)
        query = etree.Element(q(ns.REGISTER, "query"), nsmap={None: ns.REGISTER})
        nick = self.nicks.get(str(frm.bare))
        if nick is not None:
            etree.SubElement(query, q(ns.REGISTER, "registered"))
            etree.SubElement(query, q(ns.REGISTER, "username")).text = nick
            return query
        # only the nickname: the room keeps nothing else about a member
        fields = [
            Field("muc#register_roomnick", "text-single", "Desired Nickname", required=True),
        ]
        query.append(forms.build_form("form", REGISTER, fields, title="Room registration"))
        return query

    def register_set(self, frm: JID, query: etree._Element) -> list[etree._Element]:
        """jabber:iq:register set with a submitted muc#register form: the
        nickname is reserved for the user, who becomes a member if it had no
        affiliation (its presence updated in the room, 7.10)."""
        aff = self._may_register(frm)
        form = query.find(q(ns.DATA_FORMS, "x"))
        if form is None:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "a muc#register form is required")
        if form.get("type") == "cancel":
            # 10.1.2: cancelling the initial configuration destroys the room;
            # a later one leaves the configuration as it was
            return self.destroy(None, None) if self.locked else []
        values = forms.parse_form(form, REGISTER, allowed_types=("submit",))
        raw = (values.get("muc#register_roomnick") or [""])[0]
        try:
            nick = normalize_nick(raw)
        except StanzaError:
            # the required field missing, empty or unusable: not-acceptable,
            # as XEP-0077 answers missing information
            raise StanzaError(
                StanzaCondition.NOT_ACCEPTABLE, "a valid nickname is required"
            ) from None
        self._check_nick_free(nick, frm)
        bare = str(frm.bare)
        if self.nicks.get(bare) != nick:
            self.nicks[bare] = nick
            self.state_seq += 1
        if aff != "none":
            return []  # a member, admin or owner already: only the nickname
        item = etree.Element(q(MUC_ADMIN, "item"), affiliation="member", jid=bare)
        return self._apply_affiliation(item, None, None)

    # ---- the owner (10.x) -----------------------------------------------------------

    def owner_get(self, frm: JID) -> etree._Element:
        if self.affiliation(frm) != "owner":
            raise StanzaError(StanzaCondition.FORBIDDEN, "only owners configure the room")
        query = etree.Element(q(MUC_OWNER, "query"), nsmap={None: MUC_OWNER})
        query.append(config_form(self.config, self.limits))
        return query

    def owner_set(self, frm: JID, query: etree._Element) -> list[etree._Element]:
        if self.affiliation(frm) != "owner":
            raise StanzaError(StanzaCondition.FORBIDDEN, "only owners configure the room")
        destroy = query.find(q(MUC_OWNER, "destroy"))
        if destroy is not None:
            return self.destroy(destroy.get("jid"), destroy.findtext(q(MUC_OWNER, "reason")))
        form = query.find(q(ns.DATA_FORMS, "x"))
        if form is None:
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        if form.get("type") == "cancel":
            # 10.1.2: cancelling the initial configuration destroys the room;
            # a later one leaves the configuration as it was
            return self.destroy(None, None) if self.locked else []
        if form.get("type") != "submit":
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        was = dataclasses.replace(self.config)
        apply_form(self.config, form)
        self.state_seq += 1
        self.locked = False
        out: list[etree._Element] = []
        if self.config.members_only and not was.members_only:
            # 9.x: who is not a member leaves, status 322
            for occ in [o for o in self.occupants.values() if self.affiliation(o.jid) == "none"]:
                out += self._remove(occ, ("322",), None, None)
        if self.occupants and len(form):
            # 10.2.1: status 104, the configuration changed, and in the same
            # message the changes to the room's privacy: logging on (170) or
            # off (171), real JIDs now shown to all (172) or to moderators (173)
            codes = ["104"]
            if self.config.logging != was.logging:
                codes.append("170" if self.config.logging else "171")
            if self.config.whois != was.whois:
                codes.append("172" if self.config.whois == "anyone" else "173")
            m = self._message(self.jid, None, "groupchat")
            x = etree.SubElement(m, q(MUC_USER, "x"), nsmap={None: MUC_USER})
            for code in codes:
                etree.SubElement(x, q(MUC_USER, "status")).set("code", code)
            out += self._to_all(m)
        return out

    def shutdown(self) -> list[etree._Element]:
        """The service is stopping: every occupant is told it is out (status
        332, XEP-0045 9.x), so clients join again, elsewhere."""
        out = [self._unavailable(occ, occ, None, ("332",)) for occ in self.occupants.values()]
        self.occupants.clear()
        return out

    def destroy(self, alternate: str | None, reason: str | None) -> list[etree._Element]:
        out = []
        for occ in self.occupants.values():
            p = etree.Element(q(ns.CLIENT, "presence"), nsmap={None: ns.CLIENT})
            p.set("type", "unavailable")
            p.set("from", str(self._nick_jid(occ.nick)))
            p.set("to", str(occ.jid))
            x = etree.SubElement(p, q(MUC_USER, "x"), nsmap={None: MUC_USER})
            etree.SubElement(x, q(MUC_USER, "item"), affiliation="none", role="none")
            d = etree.SubElement(x, q(MUC_USER, "destroy"))
            if alternate:
                d.set("jid", alternate)
            if reason:
                etree.SubElement(d, q(MUC_USER, "reason")).text = reason
            etree.SubElement(x, q(MUC_USER, "status")).set("code", "110")
            out.append(p)
        self.occupants.clear()
        self.destroyed = True
        return out

    # ---- discovery -------------------------------------------------------------------

    def disco_info(self, asker: JID | None = None, node: str | None = None) -> etree._Element:
        """The room's disco#info; at node x-roomuser-item, the nickname the
        asker reserved (7.12), an empty answer when it has none."""
        query = etree.Element(q(ns.DISCO_INFO, "query"), nsmap={None: ns.DISCO_INFO})
        if node == ROOMUSER_NODE:
            query.set("node", node)
            nick = self.nicks.get(str(asker.bare)) if asker is not None else None
            if nick is not None:
                etree.SubElement(
                    query, q(ns.DISCO_INFO, "identity"), category="conference", type="text"
                ).set("name", nick)
            return query
        ident = etree.SubElement(
            query, q(ns.DISCO_INFO, "identity"), category="conference", type="text"
        )
        ident.set("name", self.config.name or (self.jid.local or ""))
        c = self.config
        for var in (
            MUC,
            "muc_public" if c.public else "muc_hidden",
            "muc_persistent" if c.persistent else "muc_temporary",
            "muc_membersonly" if c.members_only else "muc_open",
            "muc_moderated" if c.moderated else "muc_unmoderated",
            "muc_nonanonymous" if c.whois == "anyone" else "muc_semianonymous",
            "muc_passwordprotected" if c.password else "muc_unsecured",
            OCCUPANT_ID,
            ns.PING,
            *((MAM, SID) if c.persistent else ()),
            # 7.10: registration with the room, with the muc#register form
            ns.REGISTER,
            REGISTER,
        ):
            etree.SubElement(query, q(ns.DISCO_INFO, "feature"), var=var)
        info = [
            Field("muc#roominfo_description", values=[c.description]),
            Field("muc#roominfo_occupants", values=[str(len(self.occupants))]),
            Field("muc#roominfo_subject", values=[self.subject]),
            Field("muc#roomconfig_roomname", values=[c.name]),
            # 6.4: any muc#roomconfig field may be here; the XEP defines no
            # feature for logging, so this is where a client looks before
            # entering
            Field("muc#roomconfig_enablelogging", values=["1" if c.logging else "0"]),
        ]
        query.append(forms.build_form("result", ROOMINFO, info))
        return query


def config_form(c: RoomConfig, limits: Limits) -> etree._Element:
    def boolean(var: str, value: bool, label: str) -> Field:
        return Field(f"muc#roomconfig_{var}", "boolean", label, ["1" if value else "0"])

    def text(var: str, value: str, label: str, type_: str = "text-single") -> Field:
        return Field(f"muc#roomconfig_{var}", type_, label, [value])

    def choice(var: str, value: str, label: str, options: tuple[str, ...]) -> Field:
        return Field(
            f"muc#roomconfig_{var}", "list-single", label, [value], [Option(o) for o in options]
        )

    fields = [
        text("roomname", c.name, "Name"),
        text("roomdesc", c.description, "Description"),
        boolean("persistentroom", c.persistent, "Persistent"),
        boolean("publicroom", c.public, "Listed in the directory"),
        boolean("membersonly", c.members_only, "Members only"),
        boolean("moderatedroom", c.moderated, "Moderated"),
        boolean("passwordprotectedroom", bool(c.password), "Password"),
        text("roomsecret", c.password, "Password", "text-private"),
        text("maxusers", str(min(c.max_users, limits.max_users)), "Most occupants"),
        choice("whois", c.whois, "Who may see real JIDs", ("moderators", "anyone")),
        text("historylength", str(c.history_length), "History length"),
        boolean("changesubject", c.change_subject, "Occupants may change the subject"),
        boolean("allowinvites", c.allow_invites, "Occupants may invite"),
        choice("allowpm", c.allow_pm, "Who may send private messages", PM_POLICIES),
        boolean("enablelogging", c.logging, "Conversations are logged publicly"),
    ]
    return forms.build_form("form", ROOMCONFIG, fields, title="Room configuration")


def apply_form(c: RoomConfig, form: etree._Element) -> None:
    """Apply a submitted muc#roomconfig form; a bad value is bad-request and
    nothing is applied."""
    values = _first_values(form)
    new = dataclasses.replace(c)
    try:
        for var, raw in values.items():
            key = var.removeprefix("muc#roomconfig_")
            if key == "roomname":
                new.name = raw[:200]
            elif key == "roomdesc":
                new.description = raw[:1000]
            elif key == "persistentroom":
                new.persistent = _bool(raw)
            elif key == "publicroom":
                new.public = _bool(raw)
            elif key == "membersonly":
                new.members_only = _bool(raw)
            elif key == "moderatedroom":
                new.moderated = _bool(raw)
            elif key == "roomsecret":
                new.password = raw[:200]
            elif key == "passwordprotectedroom" and not _bool(raw):
                new.password = ""
            elif key == "maxusers":
                new.max_users = int(raw) if raw not in ("", "none") else 10**6
            elif key == "whois":
                if raw not in ("moderators", "anyone"):
                    raise ValueError(raw)
                new.whois = raw
            elif key == "historylength":
                new.history_length = max(0, int(raw))
            elif key == "changesubject":
                new.change_subject = _bool(raw)
            elif key == "allowinvites":
                new.allow_invites = _bool(raw)
            elif key == "allowpm":
                if raw not in PM_POLICIES:
                    raise ValueError(raw)
                new.allow_pm = raw
            elif key == "enablelogging":
                new.logging = _bool(raw)
    except ValueError:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "a field has an invalid value") from None
    if (
        "muc#roomconfig_passwordprotectedroom" in values
        and _bool(values["muc#roomconfig_passwordprotectedroom"])
        and not new.password
    ):
        raise StanzaError(
            StanzaCondition.NOT_ACCEPTABLE, "a password-protected room needs a password"
        )
    for f in dataclasses.fields(RoomConfig):
        setattr(c, f.name, getattr(new, f.name))


def _first_values(form: etree._Element) -> dict[str, str]:
    """Each field's first value (XEP-0004 parsing: a malformed form is bad-request)."""
    return {var: vals[0] if vals else "" for var, vals in forms.parse_form(form).items()}


def _bool(raw: str) -> bool:
    if raw in ("1", "true"):
        return True
    if raw in ("0", "false", ""):
        return False
    raise ValueError(raw)


def _nonneg(raw: str | None) -> int:
    try:
        return max(0, int(raw or "0"))
    except ValueError:
        raise StanzaError(StanzaCondition.BAD_REQUEST, "bad history request") from None


def _jid_attr(el: etree._Element, name: str) -> JID:
    try:
        return JID.parse(el.get(name) or "")
    except StanzaError:
        raise StanzaError(StanzaCondition.JID_MALFORMED) from None


def _copy(el: etree._Element) -> etree._Element:
    import copy

    return copy.deepcopy(el)


def _stamp(when: float) -> str:
    from ..xmpp.timefmt import datetime_str

    return datetime_str(when)
