"""The sans-IO room (XEP-0045): decisions and the stanzas they produce,
without a server."""

from __future__ import annotations

import pytest
from lxml import etree

from services.muc.room import MUC_ADMIN, MUC_OWNER, MUC_USER, Room, q
from services.xmpp.errors import StanzaError
from services.xmpp.jid import JID

ROOM = JID.parse("r@conference.localhost")
A, B, C = (JID.parse(f"{n}@localhost/x") for n in ("alice", "bob", "carol"))


def P(extra: str = "") -> etree._Element:
    return etree.fromstring(
        f"<presence xmlns='jabber:client'><x xmlns='http://jabber.org/protocol/muc'>{extra}</x></presence>"
    )


def M(body: str) -> etree._Element:
    return etree.fromstring(
        f"<message xmlns='jabber:client' type='groupchat'><body>{body}</body></message>"
    )


def room(**config: object) -> Room:
    r = Room(jid=ROOM, affiliations={"alice@localhost": "owner"}, clock=lambda: 1000.0)
    for k, v in config.items():
        setattr(r.config, k, v)
    r.handle_presence(A, "alice", P())
    return r


def codes(p: etree._Element) -> set[str]:
    return {s.get("code") for s in p.iter(q(MUC_USER, "status"))}


def admin(items: str) -> etree._Element:
    return etree.fromstring(f"<query xmlns='{MUC_ADMIN}'>{items}</query>")


def test_history_limits() -> None:
    r = room()
    now = [1000.0]
    r.clock = lambda: now[0]
    for i in range(5):
        now[0] = 1000.0 + i * 10
        r.handle_message(A, None, M(f"m{i}"))
    now[0] = 1100.0

    def hist(spec: str) -> list[str]:
        out = r.handle_presence(B, "bob", P(spec))
        r.occupants.pop("bob")
        return [
            m.findtext("{jabber:client}body")
            for m in out
            if m.find("{urn:xmpp:delay}delay") is not None
        ]

    assert hist("") == ["m0", "m1", "m2", "m3", "m4"]
    assert hist("<history maxstanzas='2'/>") == ["m3", "m4"]
    assert hist("<history maxstanzas='0'/>") == []
    assert hist("<history seconds='75'/>") == ["m3", "m4"]
    size = len(etree.tostring(r.history[-1].element))
    assert hist(f"<history maxchars='{size * 2}'/>") == ["m3", "m4"]
    assert hist("<history since='1970-01-01T00:16:55Z'/>") == ["m2", "m3", "m4"]


def test_history_length_is_bounded() -> None:
    r = room(history_length=3)
    for i in range(10):
        r.handle_message(A, None, M(str(i)))
    assert [h.element.findtext("{jabber:client}body") for h in r.history] == ["7", "8", "9"]


def test_non_anonymous_join_says_100_and_201_only_at_creation() -> None:
    r = Room(jid=ROOM, affiliations={"alice@localhost": "owner"}, locked=True)
    r.config.whois = "anyone"
    (own, _subject) = r.handle_presence(A, "alice", P())
    assert codes(own) == {"110", "100", "201"}
    r.locked = False
    out = r.handle_presence(B, "bob", P())
    bob_self = [p for p in out if p.get("to") == str(B) and p.get("from") == f"{ROOM}/bob"]
    assert codes(bob_self[0]) == {"110", "100"}


def test_occupant_id_is_stable_per_user_and_room() -> None:
    r = room()
    assert r.occupant_id(A) == r.occupant_id(JID.parse("alice@localhost/other"))
    assert r.occupant_id(A) != r.occupant_id(B)
    other = Room(jid=JID.parse("s@conference.localhost"))
    assert other.occupant_id(A) != r.occupant_id(A)


def test_last_owner_cannot_leave_ownership() -> None:
    r = room()
    with pytest.raises(StanzaError) as exc:
        r.admin_set(A, admin("<item affiliation='member' jid='alice@localhost'/>"))
    assert exc.value.condition.value == "conflict"


def test_admin_cannot_touch_owners_or_make_admins() -> None:
    r = room()
    r.affiliations["bob@localhost"] = "admin"
    r.handle_presence(B, "bob", P())
    for item in (
        "<item affiliation='outcast' jid='alice@localhost'/>",
        "<item affiliation='admin' jid='carol@localhost'/>",
        "<item role='none' nick='alice'/>",
    ):
        with pytest.raises(StanzaError) as exc:
            r.admin_set(B, admin(item))
        assert exc.value.condition.value == "not-allowed", item


def test_switching_to_members_only_removes_non_members_with_322() -> None:
    r = room()
    r.handle_presence(B, "bob", P())
    form = etree.fromstring(
        f"<query xmlns='{MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='muc#roomconfig_membersonly'><value>1</value></field></x></query>"
    )
    out = r.owner_set(A, form)
    removed = [p for p in out if p.get("type") == "unavailable" and p.get("from") == f"{ROOM}/bob"]
    assert removed and all("322" in codes(p) for p in removed)
    assert "bob" not in r.occupants


@pytest.mark.parametrize(
    ("var", "value", "condition"),
    [
        ("muc#roomconfig_whois", "everyone", "bad-request"),
        ("muc#roomconfig_maxusers", "lots", "bad-request"),
        ("muc#roomconfig_persistentroom", "maybe", "bad-request"),
        ("muc#roomconfig_passwordprotectedroom", "1", "not-acceptable"),
    ],
)
def test_bad_configuration_is_refused_whole(var: str, value: str, condition: str) -> None:
    r = room()
    before = r.config.persistent, r.config.name
    form = etree.fromstring(
        f"<query xmlns='{MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>"
        f"<field var='muc#roomconfig_roomname'><value>changed</value></field>"
        f"<field var='{var}'><value>{value}</value></field></x></query>"
    )
    with pytest.raises(StanzaError) as exc:
        r.owner_set(A, form)
    assert exc.value.condition.value == condition
    assert (r.config.persistent, r.config.name) == before


def test_nick_change_to_a_taken_nick() -> None:
    r = room()
    r.handle_presence(B, "bob", P())
    with pytest.raises(StanzaError) as exc:
        r.handle_presence(B, "alice", P())
    assert exc.value.condition.value == "conflict"
    assert r.occupants["bob"].jid == B


def test_join_without_nickname() -> None:
    r = room()
    with pytest.raises(StanzaError) as exc:
        r.handle_presence(B, None, P())
    assert exc.value.condition.value == "jid-malformed"


def test_private_messages_policy() -> None:
    r = room(allow_pm="moderators")
    r.handle_presence(B, "bob", P())
    pm = etree.fromstring("<message xmlns='jabber:client' type='chat'><body>hi</body></message>")
    with pytest.raises(StanzaError) as exc:
        r.handle_message(B, "alice", pm)
    assert exc.value.condition.value == "forbidden"
    (out,) = r.handle_message(A, "bob", pm)
    assert out.get("from") == f"{ROOM}/alice" and out.get("to") == str(B)
    with pytest.raises(StanzaError) as exc:
        r.handle_message(A, "nobody", pm)
    assert exc.value.condition.value == "item-not-found"


def test_join_again_while_joined_gets_the_whole_welcome() -> None:
    """A client that lost the answer to its join sends it again: it gets the
    occupants, its own presence (110), history and the subject again."""
    r = room()
    r.handle_presence(B, "bob", P())
    r.handle_message(A, None, M("earlier"))
    out = r.handle_presence(B, "bob", P())
    to_bob = [o for o in out if o.get("to") == str(B)]
    assert to_bob[0].get("from") == f"{ROOM}/alice"
    assert any("110" in codes(p) for p in to_bob if p.tag.endswith("presence"))
    assert any(m.findtext("{jabber:client}body") == "earlier" for m in to_bob)
    assert to_bob[-1].find("{jabber:client}subject") is not None
    # a plain presence update is only broadcast
    update = r.handle_presence(
        B, "bob", etree.fromstring("<presence xmlns='jabber:client'><show>away</show></presence>")
    )
    assert all(p.find("{jabber:client}subject") is None for p in update)
    assert len(update) == 2
