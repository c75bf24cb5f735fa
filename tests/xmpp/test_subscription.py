"""The sans-IO subscription state machine against RFC 6121 Appendix A, row by row."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from services.xmpp import subscription as sm
from services.xmpp.subscription import Action, Direction, StanzaType, State, Subscription

# The RFC's names for the states (A.1), built here rather than taken from the
# module, so the tables below are checked against what they say.
RFC: dict[str, State] = {
    "None": State(Subscription.NONE),
    "None + Pending Out": State(Subscription.NONE, ask=True),
    "None + Pending In": State(Subscription.NONE, pending_in=True),
    "None + Pending Out+In": State(Subscription.NONE, ask=True, pending_in=True),
    "To": State(Subscription.TO),
    "To + Pending In": State(Subscription.TO, pending_in=True),
    "From": State(Subscription.FROM),
    "From + Pending Out": State(Subscription.FROM, ask=True),
    "Both": State(Subscription.BOTH),
    # section 3.4: the states a pre-approval can be recorded in
    "None + Pre-Approved": State(Subscription.NONE, approved=True),
    "None + Pending Out + Pre-Approved": State(Subscription.NONE, ask=True, approved=True),
    "To + Pre-Approved": State(Subscription.TO, approved=True),
}

OUT, IN = Direction.OUTBOUND, Direction.INBOUND
PUSH, ROUTE, DELIVER = Action.PUSH, Action.ROUTE, Action.DELIVER
REPLY, PRESENCE = Action.REPLY_SUBSCRIBED, Action.SEND_PRESENCE
UNAVAILABLE = Action.SEND_UNAVAILABLE
CONTACT_PRESENCE = Action.DELIVER_CONTACT_PRESENCE
CONTACT_UNAVAILABLE = Action.DELIVER_CONTACT_UNAVAILABLE

#: (table, stanza type, existing state, the table's ROUTE?/DELIVER? column,
#: new state ("no state change" written out), the actions expected, in order)
Row = tuple[str, str, str, str, str, tuple[Action, ...]]

# one table row a line, as in the RFC
# fmt: off
ROWS: list[Row] = [
    # A.2.1, Table 2: outbound "subscribe"
    ("A.2.1", "subscribe", "None", "MUST", "None + Pending Out", (PUSH, ROUTE)),
    ("A.2.1", "subscribe", "None + Pending Out", "MUST", "None + Pending Out", (ROUTE,)),
    ("A.2.1", "subscribe", "None + Pending In", "MUST", "None + Pending Out+In", (PUSH, ROUTE)),
    ("A.2.1", "subscribe", "None + Pending Out+In", "MUST", "None + Pending Out+In", (ROUTE,)),
    ("A.2.1", "subscribe", "To", "MUST", "To", (ROUTE,)),
    ("A.2.1", "subscribe", "To + Pending In", "MUST", "To + Pending In", (ROUTE,)),
    ("A.2.1", "subscribe", "From", "MUST", "From + Pending Out", (PUSH, ROUTE)),
    ("A.2.1", "subscribe", "From + Pending Out", "MUST", "From + Pending Out", (ROUTE,)),
    ("A.2.1", "subscribe", "Both", "MUST", "Both", (ROUTE,)),
    # A.2.2, Table 3: outbound "unsubscribe"
    ("A.2.2", "unsubscribe", "None", "MUST", "None", (ROUTE,)),
    ("A.2.2", "unsubscribe", "None + Pending Out", "MUST", "None", (PUSH, ROUTE)),
    ("A.2.2", "unsubscribe", "None + Pending In", "MUST", "None + Pending In", (ROUTE,)),
    ("A.2.2", "unsubscribe", "None + Pending Out+In", "MUST", "None + Pending In", (PUSH, ROUTE)),
    ("A.2.2", "unsubscribe", "To", "MUST", "None", (PUSH, ROUTE)),
    ("A.2.2", "unsubscribe", "To + Pending In", "MUST", "None + Pending In", (PUSH, ROUTE)),
    ("A.2.2", "unsubscribe", "From", "MUST", "From", (ROUTE,)),
    ("A.2.2", "unsubscribe", "From + Pending Out", "MUST", "From", (PUSH, ROUTE)),
    ("A.2.2", "unsubscribe", "Both", "MUST", "From", (PUSH, ROUTE)),
    # A.2.3, Table 4: outbound "subscribed" ("pre-approval [1]": section 3.4);
    # an approval is followed by the user's presence (3.1.5)
    ("A.2.3", "subscribed", "None", "M.N.", "None + Pre-Approved", (PUSH,)),
    ("A.2.3", "subscribed", "None + Pending Out", "M.N.", "None + Pending Out + Pre-Approved", (PUSH,)),
    ("A.2.3", "subscribed", "None + Pending In", "MUST", "From", (PUSH, ROUTE, PRESENCE)),
    ("A.2.3", "subscribed", "None + Pending Out+In", "MUST", "From + Pending Out", (PUSH, ROUTE, PRESENCE)),
    ("A.2.3", "subscribed", "To", "M.N.", "To + Pre-Approved", (PUSH,)),
    ("A.2.3", "subscribed", "To + Pending In", "MUST", "Both", (PUSH, ROUTE, PRESENCE)),
    ("A.2.3", "subscribed", "From", "M.N.", "From", ()),
    ("A.2.3", "subscribed", "From + Pending Out", "M.N.", "From + Pending Out", ()),
    ("A.2.3", "subscribed", "Both", "M.N.", "Both", ()),
    # A.2.4, Table 5: outbound "unsubscribed"; a cancelled subscription is
    # preceded by the user's unavailable (3.2.2)
    ("A.2.4", "unsubscribed", "None", "S.N.", "None", ()),
    ("A.2.4", "unsubscribed", "None + Pending Out", "S.N.", "None + Pending Out", ()),
    ("A.2.4", "unsubscribed", "None + Pending In", "MUST", "None", (PUSH, ROUTE)),
    ("A.2.4", "unsubscribed", "None + Pending Out+In", "MUST", "None + Pending Out", (PUSH, ROUTE)),
    ("A.2.4", "unsubscribed", "To", "S.N.", "To", ()),
    ("A.2.4", "unsubscribed", "To + Pending In", "MUST", "To", (PUSH, ROUTE)),
    ("A.2.4", "unsubscribed", "From", "MUST", "None", (PUSH, UNAVAILABLE, ROUTE)),
    ("A.2.4", "unsubscribed", "From + Pending Out", "MUST", "None + Pending Out", (PUSH, UNAVAILABLE, ROUTE)),
    ("A.2.4", "unsubscribed", "Both", "MUST", "To", (PUSH, UNAVAILABLE, ROUTE)),
    # A.3.1, Table 6: inbound "subscribe"; [2] the server answers "subscribed"
    ("A.3.1", "subscribe", "None", "MUST", "None + Pending In", (PUSH, DELIVER)),
    ("A.3.1", "subscribe", "None + Pending Out", "MUST", "None + Pending Out+In", (PUSH, DELIVER)),
    ("A.3.1", "subscribe", "None + Pending In", "S.N.", "None + Pending In", ()),
    ("A.3.1", "subscribe", "None + Pending Out+In", "S.N.", "None + Pending Out+In", ()),
    ("A.3.1", "subscribe", "To", "MUST", "To + Pending In", (PUSH, DELIVER)),
    ("A.3.1", "subscribe", "To + Pending In", "S.N.", "To + Pending In", ()),
    ("A.3.1", "subscribe", "From", "S.N.", "From", (REPLY,)),
    ("A.3.1", "subscribe", "From + Pending Out", "S.N.", "From + Pending Out", (REPLY,)),
    ("A.3.1", "subscribe", "Both", "S.N.", "Both", (REPLY,)),
    # A.3.2, Table 7: inbound "unsubscribe"; the contact that lost 'from' gets
    # the user's unavailable (3.3.3); the [1] "unsubscribed" auto-reply is not sent
    ("A.3.2", "unsubscribe", "None", "S.N.", "None", ()),
    ("A.3.2", "unsubscribe", "None + Pending Out", "S.N.", "None + Pending Out", ()),
    ("A.3.2", "unsubscribe", "None + Pending In", "MUST", "None", (PUSH, DELIVER)),
    ("A.3.2", "unsubscribe", "None + Pending Out+In", "MUST", "None + Pending Out", (PUSH, DELIVER)),
    ("A.3.2", "unsubscribe", "To", "S.N.", "To", ()),
    ("A.3.2", "unsubscribe", "To + Pending In", "MUST", "To", (PUSH, DELIVER)),
    ("A.3.2", "unsubscribe", "From", "MUST", "None", (PUSH, DELIVER, UNAVAILABLE)),
    ("A.3.2", "unsubscribe", "From + Pending Out", "MUST", "None + Pending Out", (PUSH, DELIVER, UNAVAILABLE)),
    ("A.3.2", "unsubscribe", "Both", "MUST", "To", (PUSH, DELIVER, UNAVAILABLE)),
    # A.3.3, Table 8: inbound "subscribed"; the user gets the contact's presence (3.1.6)
    ("A.3.3", "subscribed", "None", "S.N.", "None", ()),
    ("A.3.3", "subscribed", "None + Pending Out", "MUST", "To", (PUSH, DELIVER, CONTACT_PRESENCE)),
    ("A.3.3", "subscribed", "None + Pending In", "S.N.", "None + Pending In", ()),
    ("A.3.3", "subscribed", "None + Pending Out+In", "MUST", "To + Pending In", (PUSH, DELIVER, CONTACT_PRESENCE)),
    ("A.3.3", "subscribed", "To", "S.N.", "To", ()),
    ("A.3.3", "subscribed", "To + Pending In", "S.N.", "To + Pending In", ()),
    ("A.3.3", "subscribed", "From", "S.N.", "From", ()),
    ("A.3.3", "subscribed", "From + Pending Out", "MUST", "Both", (PUSH, DELIVER, CONTACT_PRESENCE)),
    ("A.3.3", "subscribed", "Both", "S.N.", "Both", ()),
    # A.3.4, Table 9: inbound "unsubscribed"; losing 'to' brings the contact's
    # unavailable (3.2.3)
    ("A.3.4", "unsubscribed", "None", "S.N.", "None", ()),
    ("A.3.4", "unsubscribed", "None + Pending Out", "MUST", "None", (PUSH, DELIVER)),
    ("A.3.4", "unsubscribed", "None + Pending In", "S.N.", "None + Pending In", ()),
    ("A.3.4", "unsubscribed", "None + Pending Out+In", "MUST", "None + Pending In", (PUSH, DELIVER)),
    ("A.3.4", "unsubscribed", "To", "MUST", "None", (PUSH, DELIVER, CONTACT_UNAVAILABLE)),
    ("A.3.4", "unsubscribed", "To + Pending In", "MUST", "None + Pending In", (PUSH, DELIVER, CONTACT_UNAVAILABLE)),
    ("A.3.4", "unsubscribed", "From", "S.N.", "From", ()),
    ("A.3.4", "unsubscribed", "From + Pending Out", "MUST", "From", (PUSH, DELIVER)),
    ("A.3.4", "unsubscribed", "Both", "MUST", "From", (PUSH, DELIVER, CONTACT_UNAVAILABLE)),
]

#: section 3.4: a pre-approval, which the tables leave out. The state behaves
#: as the one without it, except that an inbound "subscribe" is answered at
#: once (A.3.1 [1]) and an outbound "unsubscribed" cancels it (A.2.4 [1]).
PRE_APPROVAL_ROWS: list[Row] = [
    ("A.2.1", "subscribe", "None + Pre-Approved", "MUST", "None + Pending Out + Pre-Approved", (PUSH, ROUTE)),
    ("A.2.1", "subscribe", "None + Pending Out + Pre-Approved", "MUST", "None + Pending Out + Pre-Approved", (ROUTE,)),
    ("A.2.1", "subscribe", "To + Pre-Approved", "MUST", "To + Pre-Approved", (ROUTE,)),
    ("A.2.2", "unsubscribe", "None + Pre-Approved", "MUST", "None + Pre-Approved", (ROUTE,)),
    ("A.2.2", "unsubscribe", "None + Pending Out + Pre-Approved", "MUST", "None + Pre-Approved", (PUSH, ROUTE)),
    ("A.2.2", "unsubscribe", "To + Pre-Approved", "MUST", "None + Pre-Approved", (PUSH, ROUTE)),
    ("A.2.3", "subscribed", "None + Pre-Approved", "M.N.", "None + Pre-Approved", ()),
    ("A.2.3", "subscribed", "None + Pending Out + Pre-Approved", "M.N.", "None + Pending Out + Pre-Approved", ()),
    ("A.2.3", "subscribed", "To + Pre-Approved", "M.N.", "To + Pre-Approved", ()),
    ("A.2.4", "unsubscribed", "None + Pre-Approved", "S.N.", "None", (PUSH,)),
    ("A.2.4", "unsubscribed", "None + Pending Out + Pre-Approved", "S.N.", "None + Pending Out", (PUSH,)),
    ("A.2.4", "unsubscribed", "To + Pre-Approved", "S.N.", "To", (PUSH,)),
    ("A.3.1", "subscribe", "None + Pre-Approved", "S.N.", "From", (PUSH, REPLY, PRESENCE)),
    ("A.3.1", "subscribe", "None + Pending Out + Pre-Approved", "S.N.", "From + Pending Out", (PUSH, REPLY, PRESENCE)),
    ("A.3.1", "subscribe", "To + Pre-Approved", "S.N.", "Both", (PUSH, REPLY, PRESENCE)),
    ("A.3.2", "unsubscribe", "None + Pre-Approved", "S.N.", "None + Pre-Approved", ()),
    ("A.3.2", "unsubscribe", "None + Pending Out + Pre-Approved", "S.N.", "None + Pending Out + Pre-Approved", ()),
    ("A.3.2", "unsubscribe", "To + Pre-Approved", "S.N.", "To + Pre-Approved", ()),
    ("A.3.3", "subscribed", "None + Pre-Approved", "S.N.", "None + Pre-Approved", ()),
    ("A.3.3", "subscribed", "None + Pending Out + Pre-Approved", "MUST", "To + Pre-Approved", (PUSH, DELIVER, CONTACT_PRESENCE)),
    ("A.3.3", "subscribed", "To + Pre-Approved", "S.N.", "To + Pre-Approved", ()),
    ("A.3.4", "unsubscribed", "None + Pre-Approved", "S.N.", "None + Pre-Approved", ()),
    ("A.3.4", "unsubscribed", "None + Pending Out + Pre-Approved", "MUST", "None + Pre-Approved", (PUSH, DELIVER)),
    ("A.3.4", "unsubscribed", "To + Pre-Approved", "MUST", "None + Pre-Approved", (PUSH, DELIVER, CONTACT_UNAVAILABLE)),
]
# fmt: on


def _id(row: Row) -> str:
    return f"{row[0]}-{row[1]}-{row[2]}"


def _check(row: Row) -> None:
    table, typ, before, column, after, actions = row
    direction = OUT if table.startswith("A.2") else IN
    got = sm.transition(direction, StanzaType(typ), RFC[before])
    assert got is sm.TRANSITIONS[(direction, StanzaType(typ), RFC[before])]
    assert got.new == RFC[after]
    assert got.actions == actions
    # the row cites its table, and section 3.4 where a pre-approval is involved
    assert got.rule.split(" ")[0].rstrip(",") == table
    if RFC[before].approved or got.new.approved:
        assert "3.4" in got.rule
    # the table's column: routed (outbound) or delivered (inbound) on MUST only
    passed_on = ROUTE if direction is OUT else DELIVER
    assert (passed_on in actions) == (column == "MUST")


@pytest.mark.parametrize("row", ROWS, ids=[_id(r) for r in ROWS])
def test_appendix_a_row(row: Row) -> None:
    _check(row)


@pytest.mark.parametrize("row", PRE_APPROVAL_ROWS, ids=[_id(r) for r in PRE_APPROVAL_ROWS])
def test_pre_approval_row(row: Row) -> None:
    _check(row)


def test_every_table_has_its_nine_rows() -> None:
    tables = [r[0] for r in ROWS]
    for table in ("A.2.1", "A.2.2", "A.2.3", "A.2.4", "A.3.1", "A.3.2", "A.3.3", "A.3.4"):
        rows = [r for r in ROWS if r[0] == table]
        assert len(rows) == 9 and tables.count(table) == 9
        assert [r[2] for r in rows] == list(RFC)[:9]
        assert len({r[1] for r in rows}) == 1


def test_table_is_exactly_every_valid_state() -> None:
    assert set(sm.STATES) == set(RFC.values()) and len(sm.STATES) == len(RFC)
    assert set(sm.TRANSITIONS) == set(itertools.product(Direction, StanzaType, sm.STATES))
    assert len(ROWS) + len(PRE_APPROVAL_ROWS) == len(sm.TRANSITIONS)


def test_labels_are_the_rfc_names() -> None:
    for name, state in RFC.items():
        assert state.label == name


# ---- properties ---------------------------------------------------------------


def _valid(sub: Subscription, ask: bool, pending_in: bool, approved: bool) -> bool:
    """RFC 6121 A.1 (and 3.4), written out independently of State's check."""
    has_to = sub in (Subscription.TO, Subscription.BOTH)
    has_from = sub in (Subscription.FROM, Subscription.BOTH)
    if ask and has_to:  # already subscribed: nothing to ask for
        return False
    if pending_in and has_from:  # already approved: nothing pending
        return False
    return not (approved and (has_from or pending_in))  # nothing left to pre-approve


subscriptions = hs.sampled_from(Subscription)
flags = hs.booleans()
raw_states = hs.tuples(
    hs.sampled_from(["none", "to", "from", "both", "bogus"]), flags, flags, flags
)


@given(subscriptions, flags, flags, flags)
def test_state_refuses_invalid_combinations(
    sub: Subscription, ask: bool, pending_in: bool, approved: bool
) -> None:
    if _valid(sub, ask, pending_in, approved):
        state = State(sub, ask, pending_in, approved)
        assert state in sm.STATES
        assert State.from_stored(sub.value, ask, pending_in, approved) == state
    else:
        with pytest.raises(sm.InvalidState):
            State(sub, ask, pending_in, approved)


@given(hs.sampled_from(Direction), hs.sampled_from(StanzaType), raw_states)
def test_every_stored_state_has_a_valid_outcome(
    direction: Direction, typ: StanzaType, raw: tuple[str, bool, bool, bool]
) -> None:
    state = State.from_stored(*raw)  # whatever storage holds reads as a valid state
    assert state in sm.STATES
    step = sm.transition(direction, typ, state)
    new = step.new
    assert _valid(new.subscription, new.ask, new.pending_in, new.approved)
    assert new in sm.STATES
    # a change is stored and pushed, first; nothing else is
    assert (PUSH in step.actions) == (new != state)
    assert PUSH not in step.actions[1:]
    assert len(set(step.actions)) == len(step.actions)
    if direction is OUT:  # the user's own stanza goes to the contact, never back
        assert not {DELIVER, REPLY, CONTACT_PRESENCE, CONTACT_UNAVAILABLE} & set(step.actions)
    else:  # the contact's stanza is delivered to the user, never routed back
        assert ROUTE not in step.actions
    assert step.rule.startswith("A.2." if direction is OUT else "A.3.")


@given(hs.lists(hs.tuples(hs.sampled_from(Direction), hs.sampled_from(StanzaType)), max_size=30))
def test_any_sequence_of_stanzas_stays_valid(steps: list[tuple[Direction, StanzaType]]) -> None:
    state = State()
    for direction, typ in steps:
        step = sm.transition(direction, typ, state)
        # the subscriptions only change as the stanza says (RFC 6121 3.1-3.3)
        gained = {s for s in ("to", "from") if _has(step.new, s) and not _has(state, s)}
        lost = {s for s in ("to", "from") if _has(state, s) and not _has(step.new, s)}
        if gained:
            assert (direction, typ, gained) in (
                (IN, StanzaType.SUBSCRIBED, {"to"}),
                (OUT, StanzaType.SUBSCRIBED, {"from"}),
                (IN, StanzaType.SUBSCRIBE, {"from"}),  # pre-approved
            )
        if lost:
            assert (direction, typ, lost) in (
                (OUT, StanzaType.UNSUBSCRIBE, {"to"}),
                (IN, StanzaType.UNSUBSCRIBED, {"to"}),
                (OUT, StanzaType.UNSUBSCRIBED, {"from"}),
                (IN, StanzaType.UNSUBSCRIBE, {"from"}),
            )
        state = step.new


def _has(state: State, which: str) -> bool:
    return state.has_to if which == "to" else state.has_from
