"""The sans-IO room (XEP-0045): decisions and the stanzas they produce,
without a server."""

from __future__ import annotations

import pytest
from lxml import etree

from services.muc.room import MUC_ADMIN, MUC_OWNER, MUC_USER, Room, q
from services.muc.room import REGISTER as MUC_REGISTER
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


def owner_form(fields: dict[str, str]) -> etree._Element:
    inner = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields.items())
    return etree.fromstring(
        f"<query xmlns='{MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>{inner}</x></query>"
    )


def config_codes(out: list[etree._Element], to: JID) -> set[str]:
    (m,) = [o for o in out if o.tag == "{jabber:client}message" and o.get("to") == str(to)]
    assert m.get("type") == "groupchat" and m.get("from") == str(ROOM)
    return codes(m)


def test_logging_is_configured_announced_and_told_on_entry() -> None:
    r = room()
    form = r.owner_get(A).find("{jabber:x:data}x")
    assert form is not None
    fields = {f.get("var"): f for f in form.iter("{jabber:x:data}field")}
    logging_field = fields["muc#roomconfig_enablelogging"]
    assert logging_field.get("type") == "boolean"
    assert logging_field.findtext("{jabber:x:data}value") == "0"
    r.handle_presence(B, "bob", P())
    out = r.owner_set(A, owner_form({"muc#roomconfig_enablelogging": "1"}))
    assert r.config.logging
    # 10.2.1: one message to every occupant, 170 with the 104
    assert config_codes(out, A) == {"104", "170"} and config_codes(out, B) == {"104", "170"}
    info = r.disco_info()
    roominfo = {
        f.get("var"): f.findtext("{jabber:x:data}value") for f in info.iter("{jabber:x:data}field")
    }
    assert roominfo["muc#roomconfig_enablelogging"] == "1"
    # 7.2.12: whoever enters a logged room is warned in its own presence only
    joined = r.handle_presence(C, "carol", P())
    own = [p for p in joined if p.get("to") == str(C) and p.get("from") == f"{ROOM}/carol"]
    assert "170" in codes(own[0])
    seen = [p for p in joined if p.get("to") == str(A) and p.get("from") == f"{ROOM}/carol"]
    assert "170" not in codes(seen[0])
    out = r.owner_set(A, owner_form({"muc#roomconfig_enablelogging": "0"}))
    assert config_codes(out, C) == {"104", "171"}
    # unchanged: no privacy code
    out = r.owner_set(A, owner_form({"muc#roomconfig_enablelogging": "0"}))
    assert config_codes(out, C) == {"104"}
    r.occupants.pop("carol")
    joined = r.handle_presence(C, "carol", P())
    own = [p for p in joined if p.get("to") == str(C) and p.get("from") == f"{ROOM}/carol"]
    assert codes(own[0]) == {"110"}


def test_anonymity_change_is_announced_with_172_and_173() -> None:
    r = room()
    r.handle_presence(B, "bob", P())
    out = r.owner_set(A, owner_form({"muc#roomconfig_whois": "anyone"}))
    assert config_codes(out, B) == {"104", "172"}
    out = r.owner_set(A, owner_form({"muc#roomconfig_whois": "anyone"}))
    assert config_codes(out, B) == {"104"}
    out = r.owner_set(
        A,
        owner_form({"muc#roomconfig_whois": "moderators", "muc#roomconfig_enablelogging": "1"}),
    )
    assert config_codes(out, B) == {"104", "173", "170"}


@pytest.mark.parametrize(
    ("asked", "given"),
    [
        ("bob  smith", "bob smith"),  # a run of spaces is one space
        (" bob", "bob"),  # no leading or trailing space
        ("bob\u00a0smith", "bob smith"),  # a non-ASCII space is U+0020
        ("\uff42\uff4f\uff42", "bob"),  # NFKC: fullwidth letters
    ],
)
def test_nickname_is_normalized_with_210(asked: str, given: str) -> None:
    r = room()
    out = r.handle_presence(B, asked, P())
    assert given in r.occupants and asked not in r.occupants
    own = [p for p in out if p.get("to") == str(B) and p.tag == "{jabber:client}presence"]
    assert own[-1].get("from") == f"{ROOM}/{given}"
    assert {"110", "210"} <= codes(own[-1])
    seen = [p for p in out if p.get("to") == str(A)]
    assert seen[0].get("from") == f"{ROOM}/{given}" and "210" not in codes(seen[0])
    # a nickname already in its normal form gets no 210
    out = r.handle_presence(C, "carol", P())
    assert all("210" not in codes(p) for p in out if p.tag == "{jabber:client}presence")


def test_nickname_conflict_and_change_compare_normalized_forms() -> None:
    r = room()
    r.handle_presence(B, "bob smith", P())
    with pytest.raises(StanzaError) as exc:
        r.handle_presence(C, "bob  smith", P())
    assert exc.value.condition.value == "conflict"
    # a presence to the unnormalized nick is a presence update, not a change
    update = r.handle_presence(B, " bob smith ", P(""))
    assert r.occupants["bob smith"].jid == B
    assert all(p.get("type") != "unavailable" for p in update)
    # a change to a nick that normalizes differently: 303 with the new
    # nick as the room keeps it, 110 and 210 in the new self-presence
    out = r.handle_presence(
        B, "robert\u3000smith", etree.fromstring("<presence xmlns='jabber:client'/>")
    )
    gone = [p for p in out if p.get("type") == "unavailable" and p.get("to") == str(A)]
    item = gone[0].find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
    assert item is not None and item.get("nick") == "robert smith"
    own = [p for p in out if p.get("to") == str(B) and p.get("type") is None]
    assert own[0].get("from") == f"{ROOM}/robert smith" and {"110", "210"} <= codes(own[0])
    others = [p for p in out if p.get("to") == str(A) and p.get("type") is None]
    assert "210" not in codes(others[0])
    with pytest.raises(StanzaError) as exc:
        r.handle_presence(C, "alice ", P())
    assert exc.value.condition.value == "conflict"


@pytest.mark.parametrize("nick", ["   ", "bob\u0007", "\u3000"])
def test_nickname_that_cannot_be_normalized_is_jid_malformed(nick: str) -> None:
    r = room()
    with pytest.raises(StanzaError) as exc:
        r.handle_presence(B, nick, P())
    assert exc.value.condition.value == "jid-malformed"
    assert len(r.occupants) == 1


def bounce(kind: str, condition: str | None) -> etree._Element:
    cond = f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>" if condition else ""
    return etree.fromstring(
        f"<{kind} xmlns='jabber:client' type='error'><error type='cancel'>{cond}"
        f"<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>gone</text></error></{kind}>"
    )


@pytest.mark.parametrize(
    ("kind", "nick", "condition"),
    [
        ("message", None, "service-unavailable"),
        ("message", "alice", "recipient-unavailable"),
        ("presence", "alice", "remote-server-not-found"),
        ("presence", None, None),
    ],
)
def test_error_from_an_occupant_removes_it_with_333(
    kind: str, nick: str | None, condition: str | None
) -> None:
    r = room()
    r.handle_presence(B, "bob", P())
    r.handle_presence(C, "carol", P())
    handle = r.handle_message if kind == "message" else r.handle_presence
    out = handle(B, nick, bounce(kind, condition))
    assert "bob" not in r.occupants
    # the others learn it is gone, with 333; nothing goes to the gone client
    assert sorted(p.get("to") for p in out) == sorted([str(A), str(C)])
    for p in out:
        assert p.get("type") == "unavailable" and p.get("from") == f"{ROOM}/bob"
        assert codes(p) == {"333"}


def test_error_that_is_not_a_bounce_or_not_from_an_occupant_changes_nothing() -> None:
    r = room()
    r.handle_presence(B, "bob", P())
    # a live client refusing what it got stays
    assert r.handle_message(B, None, bounce("message", "feature-not-implemented")) == []
    assert r.handle_presence(B, "bob", bounce("presence", "not-acceptable")) == []
    # another resource of bob's (not the occupant) or a stranger: nothing
    other = JID.parse("bob@localhost/elsewhere")
    assert r.handle_message(other, None, bounce("message", "service-unavailable")) == []
    assert r.handle_presence(C, None, bounce("presence", "service-unavailable")) == []
    # an error answer to a forwarded IQ is an answer, not a reason to remove
    (fwd,) = r.forward_iq(
        A,
        "bob",
        etree.fromstring("<iq xmlns='jabber:client' type='get' id='q1'><query xmlns='x'/></iq>"),
    )
    err = etree.fromstring(
        f"<iq xmlns='jabber:client' type='error' id='{fwd.get('id')}'><error type='cancel'>"
        "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    )
    (answer,) = r.iq_answer(B, "alice", err)  # to the asker's occupant JID
    assert answer.get("to") == str(A)
    assert set(r.occupants) == {"alice", "bob"}
    # while a bounce does remove it
    (gone,) = r.handle_message(B, None, bounce("message", "gone"))
    assert codes(gone) == {"333"} and set(r.occupants) == {"alice"}


def register_form(
    nick: str | None, form_type: str = MUC_REGISTER, typ: str = "submit"
) -> etree._Element:
    fields = f"<field var='FORM_TYPE'><value>{form_type}</value></field>"
    if nick is not None:
        fields += f"<field var='muc#register_roomnick'><value>{nick}</value></field>"
    return etree.fromstring(
        f"<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='{typ}'>"
        f"{fields}</x></query>"
    )


def test_register_get_returns_the_form_then_the_registration() -> None:
    r = room()
    query = r.register_get(B)
    assert query.tag == "{jabber:iq:register}query"
    form = query.find("{jabber:x:data}x")
    assert form is not None and form.get("type") == "form"
    fields = {f.get("var"): f for f in form.iter("{jabber:x:data}field")}
    assert fields["FORM_TYPE"].findtext("{jabber:x:data}value") == MUC_REGISTER
    assert fields["muc#register_roomnick"].find("{jabber:x:data}required") is not None
    assert r.register_set(B, register_form("Bobby")) == []
    again = r.register_get(B)
    assert again.find("{jabber:iq:register}registered") is not None
    assert again.findtext("{jabber:iq:register}username") == "Bobby"
    assert again.find("{jabber:x:data}x") is None


def test_register_makes_a_member_and_reserves_the_nick() -> None:
    r = room(moderated=True)
    r.handle_presence(B, "bob", P())
    assert r.occupants["bob"].role == "visitor"
    out = r.register_set(B, register_form(" Bobby  B "))
    assert r.affiliations["bob@localhost"] == "member"
    assert r.nicks == {"bob@localhost": "Bobby B"}
    # 7.10: who is in the room is shown as a member now, to everyone
    assert sorted(p.get("to") for p in out) == sorted([str(A), str(B)])
    for p in out:
        item = p.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
        assert item is not None and item.get("affiliation") == "member"
        assert item.get("role") == "participant"
    # the reserved nick: another user may not enter or change to it
    with pytest.raises(StanzaError) as exc:
        r.handle_presence(C, "Bobby B", P())
    assert exc.value.condition.value == "conflict"
    r.handle_presence(C, "carol", P())
    with pytest.raises(StanzaError) as exc:
        r.handle_presence(C, "Bobby  B", P())
    assert exc.value.condition.value == "conflict"
    # its owner may; and may keep using another nick meanwhile (7.12)
    other = JID.parse("bob@localhost/phone")
    r.handle_presence(other, "Bobby B", P())
    assert r.occupants["Bobby B"].jid == other
    # 7.12: the reserved nick at node x-roomuser-item, nothing for others
    info = r.disco_info(B, "x-roomuser-item")
    assert info.get("node") == "x-roomuser-item"
    (ident,) = info.findall("{http://jabber.org/protocol/disco#info}identity")
    assert (ident.get("category"), ident.get("type"), ident.get("name")) == (
        "conference",
        "text",
        "Bobby B",
    )
    empty = r.disco_info(C, "x-roomuser-item")
    assert len(empty) == 0 and empty.get("node") == "x-roomuser-item"
    # the member list carries the reserved nick
    members = r.admin_get(A, admin("<item affiliation='member'/>"))
    (item,) = members
    assert (item.get("jid"), item.get("nick")) == ("bob@localhost", "Bobby B")
    assert {
        f.get("var") for f in r.disco_info().iter("{http://jabber.org/protocol/disco#info}feature")
    } >= {"jabber:iq:register", MUC_REGISTER}


def test_register_refusals() -> None:
    r = room()
    r.register_set(B, register_form("bobby"))
    for form, condition in (
        (register_form("bobby"), "conflict"),  # reserved by someone else
        (register_form("alice"), "conflict"),  # another user's nick in the room
        (register_form(None), "not-acceptable"),
        (register_form("   "), "not-acceptable"),
        (register_form("carol", form_type="urn:other"), "bad-request"),
        (register_form("carol", typ="form"), "bad-request"),
        (etree.fromstring("<query xmlns='jabber:iq:register'/>"), "bad-request"),
    ):
        with pytest.raises(StanzaError) as exc:
            r.register_set(C, form)
        assert exc.value.condition.value == condition, etree.tostring(form)
    assert "carol@localhost" not in r.nicks and r.affiliation(C) == "none"
    # an owner registering keeps its affiliation
    assert r.register_set(A, register_form("the boss")) == []
    assert r.affiliation(A) == "owner" and r.nicks["alice@localhost"] == "the boss"
    # a banned user may not register, nor see the form
    r.affiliations["dave@localhost"] = "outcast"
    dave = JID.parse("dave@localhost/x")
    for call in (lambda: r.register_get(dave), lambda: r.register_set(dave, register_form("d"))):
        with pytest.raises(StanzaError) as exc:
            call()
        assert exc.value.condition.value == "forbidden"


def test_members_only_room_lets_only_members_register() -> None:
    r = room(members_only=True)
    for call in (lambda: r.register_get(B), lambda: r.register_set(B, register_form("bob"))):
        with pytest.raises(StanzaError) as exc:
            call()
        assert exc.value.condition.value == "not-allowed"
    assert r.affiliation(B) == "none" and not r.nicks
    r.affiliations["bob@localhost"] = "member"
    r.register_set(B, register_form("bob"))
    assert r.nicks == {"bob@localhost": "bob"}
    # a locked room is not there for who does not own it
    locked = Room(jid=ROOM, affiliations={"alice@localhost": "owner"}, locked=True)
    with pytest.raises(StanzaError) as exc:
        locked.register_get(B)
    assert exc.value.condition.value == "item-not-found"


def test_reservation_ends_with_membership_and_is_persisted() -> None:
    from services.muc import persist

    r = room()
    r.register_set(B, register_form("bobby"))
    r.register_set(C, register_form("caz"))
    state = persist.state_of(r)
    back = Room(jid=ROOM)
    persist.apply_state(back, state)
    assert back.nicks == {"bob@localhost": "bobby", "carol@localhost": "caz"}
    # a document from before reserved nicknames still loads
    import json

    doc = json.loads(state)
    del doc["nicks"]
    old = Room(jid=ROOM)
    persist.apply_state(old, json.dumps(doc))
    assert old.nicks == {} and old.affiliations == back.affiliations
    seq = r.state_seq
    r.admin_set(A, admin("<item affiliation='none' jid='bob@localhost'/>"))
    r.admin_set(A, admin("<item affiliation='outcast' jid='carol@localhost'/>"))
    assert r.nicks == {} and r.state_seq > seq
    r.handle_presence(B, "bobby", P())  # free again


def test_cancelling_the_initial_configuration_destroys_the_room() -> None:
    """10.1.2 (MUST), and a later cancel changes nothing (10.2)."""
    cancel = etree.fromstring(
        f"<query xmlns='{MUC_OWNER}'><x xmlns='jabber:x:data' type='cancel'/></query>"
    )
    r = Room(jid=ROOM, affiliations={"alice@localhost": "owner"}, locked=True)
    r.handle_presence(A, "alice", P())
    (out,) = r.owner_set(A, cancel)
    assert out.get("type") == "unavailable" and out.get("to") == str(A)
    assert out.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy") is not None
    assert r.destroyed and r.empty
    r = room()
    r.locked = False
    assert r.owner_set(A, cancel) == []
    assert not r.destroyed and "alice" in r.occupants


def test_a_persistent_room_archives_under_the_id_occupants_see() -> None:
    """XEP-0313 5.1.2: messages with a body and subject changes, each under
    one stanza-id (XEP-0359) in every copy; a sender's own claim removed; a
    temporary room archives nothing."""
    sid = "{urn:xmpp:sid:0}stanza-id"
    r = room(persistent=True)
    r.handle_presence(B, "bob", P())
    forged = M("hi")
    etree.SubElement(forged, sid, by=str(ROOM), id="forged")
    out = r.handle_message(A, None, forged)
    ids = {s.get("id") for m in out for s in m.iter(sid)}
    assert len(out) == 2 and len(ids) == 1 and "forged" not in ids
    (kept,) = r.to_archive
    assert kept[0] in ids and kept[2] == f"{ROOM}/alice"
    assert kept[3].findtext("{jabber:client}body") == "hi"
    r.handle_message(
        A,
        None,
        etree.fromstring(
            "<message xmlns='jabber:client' type='groupchat'><subject>news</subject></message>"
        ),
    )
    assert len(r.to_archive) == 2
    t = room()
    out = t.handle_message(A, None, M("gone"))
    assert t.to_archive == [] and not [s for m in out for s in m.iter(sid)]


def test_who_may_read_the_archive() -> None:
    r = room()
    assert r.may_read_archive(B)
    r.affiliations["bob@localhost"] = "outcast"
    assert not r.may_read_archive(B)
    m = room(members_only=True)
    assert not m.may_read_archive(C) and m.may_read_archive(A)
    m.affiliations["carol@localhost"] = "member"
    assert m.may_read_archive(C)
