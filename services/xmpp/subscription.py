"""The presence subscription state machine (sans-IO, RFC 6121 Appendix A).

Everything that decides what a subscription stanza does to a roster item
lives in this file; the presence service (``services/presence/service.py``)
owns storage and routing and drives it:

    step = transition(Direction.INBOUND, StanzaType.SUBSCRIBE, state)
    # store step.new if it differs from state, then act on step.actions in order

A :class:`State` is one roster item's subscription seen from its owner, "the
user" (RFC 6121 A.1): the subscription (none/to/from/both), ``ask`` (pending
out), ``pending_in`` and ``approved`` (a pre-approval, section 3.4). Nine of
the valid states are the RFC's; three more are pre-approvals ("None",
"None + Pending Out" and "To" with ``approved``), the only states where a
pre-approval means anything. The stanza of a pending inbound request is data,
not state: the caller stores it when ``pending_in`` is gained and drops it when
``pending_in`` is lost.

``Direction.OUTBOUND`` is a stanza the user sent to the contact (A.2, the
user's server before routing it); ``Direction.INBOUND`` is one the contact sent
to the user (A.3, the user's server before delivering it).

The table below has a row for every (direction, stanza type, valid state). Each
row names the Appendix A table it comes from (A.2.1 subscribe, A.2.2
unsubscribe, A.2.3 subscribed, A.2.4 unsubscribed; A.3.1 to A.3.4 likewise
inbound), with the section 3.4 rules for the pre-approved states. Where the
RFC leaves a choice, the rows take: "S.N." (SHOULD NOT) route or deliver means
not; pre-approval (A.2.3 [1]) and the auto-approval it enables (A.3.1 [1]) are
implemented; "already subscribed" is auto-answered (A.3.1 [2]); an inbound
unsubscribe is not auto-answered with "unsubscribed" (A.3.2 [1], a SHOULD).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Direction(enum.Enum):
    OUTBOUND = "outbound"  # sent by the user to the contact (Appendix A.2)
    INBOUND = "inbound"  # sent by the contact to the user (Appendix A.3)


class StanzaType(enum.Enum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"


class Subscription(enum.Enum):
    NONE = "none"
    TO = "to"  # the user receives the contact's presence
    FROM = "from"  # the contact receives the user's presence
    BOTH = "both"


class Action(enum.Enum):
    """What the caller does besides storing the new state, in the row's order."""

    #: push the changed roster item to the user's interested resources (RFC 6121
    #: 2.1.6), unless the item is one the user never put in the roster; done
    #: with the write, so it always comes first
    PUSH = "push"
    #: route the stanza, stamped with the bare JIDs, to the contact
    ROUTE = "route"
    #: deliver the stanza to the user's available resources
    DELIVER = "deliver"
    #: answer the contact with presence of type "subscribed" for the user
    REPLY_SUBSCRIBED = "reply-subscribed"
    #: the user's current presence (each available resource) to the contact
    SEND_PRESENCE = "send-presence"
    #: unavailable presence from each of the user's resources to the contact
    SEND_UNAVAILABLE = "send-unavailable"
    #: the contact's current presence to the user's available resources
    DELIVER_CONTACT_PRESENCE = "deliver-contact-presence"
    #: unavailable presence from the contact to the user's available resources
    DELIVER_CONTACT_UNAVAILABLE = "deliver-contact-unavailable"


class InvalidState(ValueError):
    """A combination of subscription and flags that RFC 6121 A.1 has no name for."""


@dataclass(frozen=True, slots=True)
class State:
    subscription: Subscription = Subscription.NONE
    ask: bool = False  # "Pending Out": the user's subscribe is unanswered
    pending_in: bool = False  # "Pending In": the contact's subscribe is unanswered
    approved: bool = False  # the user pre-approved the contact (section 3.4)

    def __post_init__(self) -> None:
        if self.ask and self.has_to:
            raise InvalidState("ask (pending out) with a subscription to the contact")
        if self.pending_in and self.has_from:
            raise InvalidState("pending in with a subscription from the contact")
        if self.approved and (self.has_from or self.pending_in):
            raise InvalidState("a pre-approval with a subscription or request from the contact")

    @property
    def has_to(self) -> bool:
        return self.subscription in (Subscription.TO, Subscription.BOTH)

    @property
    def has_from(self) -> bool:
        return self.subscription in (Subscription.FROM, Subscription.BOTH)

    @classmethod
    def from_stored(cls, subscription: str, ask: bool, pending_in: bool, approved: bool) -> State:
        """The state a stored roster item means, whatever was written: an
        unknown subscription reads as none, and a flag the subscription makes
        moot (ask with to/both, pending in or a pre-approval with from/both, a
        pre-approval beside a request still to answer) is dropped."""
        try:
            sub = Subscription(subscription)
        except ValueError:
            sub = Subscription.NONE
        to = sub in (Subscription.TO, Subscription.BOTH)
        frm = sub in (Subscription.FROM, Subscription.BOTH)
        pending_in = pending_in and not frm
        return cls(sub, ask and not to, pending_in, approved and not frm and not pending_in)

    @property
    def label(self) -> str:
        """The state's name in RFC 6121 A.1 (plus " + Pre-Approved", section 3.4)."""
        name = self.subscription.value.capitalize()
        pending = [word for flag, word in ((self.ask, "Out"), (self.pending_in, "In")) if flag]
        if pending:
            name += " + Pending " + "+".join(pending)
        return name + " + Pre-Approved" if self.approved else name


@dataclass(frozen=True, slots=True)
class Transition:
    new: State  # the state after the stanza (the old one: no change)
    actions: tuple[Action, ...]  # in the order the caller performs them
    rule: str  # where in RFC 6121 the row comes from


_S = Subscription
NONE = State()
NONE_OUT = State(_S.NONE, ask=True)
NONE_IN = State(_S.NONE, pending_in=True)
NONE_OUT_IN = State(_S.NONE, ask=True, pending_in=True)
TO = State(_S.TO)
TO_IN = State(_S.TO, pending_in=True)
FROM = State(_S.FROM)
FROM_OUT = State(_S.FROM, ask=True)
BOTH = State(_S.BOTH)
NONE_PRE = State(_S.NONE, approved=True)
NONE_OUT_PRE = State(_S.NONE, ask=True, approved=True)
TO_PRE = State(_S.TO, approved=True)

#: every valid state: the nine of RFC 6121 A.1, then the three pre-approved ones
STATES: tuple[State, ...] = (
    NONE, NONE_OUT, NONE_IN, NONE_OUT_IN, TO, TO_IN, FROM, FROM_OUT, BOTH,
    NONE_PRE, NONE_OUT_PRE, TO_PRE,
)  # fmt: skip

OUT, IN = Direction.OUTBOUND, Direction.INBOUND
SUBSCRIBE, UNSUBSCRIBE = StanzaType.SUBSCRIBE, StanzaType.UNSUBSCRIBE
SUBSCRIBED, UNSUBSCRIBED = StanzaType.SUBSCRIBED, StanzaType.UNSUBSCRIBED
PUSH, ROUTE, DELIVER = Action.PUSH, Action.ROUTE, Action.DELIVER
REPLY_SUBSCRIBED, SEND_PRESENCE = Action.REPLY_SUBSCRIBED, Action.SEND_PRESENCE
SEND_UNAVAILABLE = Action.SEND_UNAVAILABLE
DELIVER_CONTACT_PRESENCE = Action.DELIVER_CONTACT_PRESENCE
DELIVER_CONTACT_UNAVAILABLE = Action.DELIVER_CONTACT_UNAVAILABLE


def _row(rule: str, new: State, *actions: Action) -> Transition:
    return Transition(new, actions, rule)


#: (direction, stanza type, state) -> what happens; a row whose new state is
#: its old one changes nothing in storage. "3.4" rows: a pre-approval, which
#: the RFC's tables leave out, otherwise behaves as the state without it.
TRANSITIONS: dict[tuple[Direction, StanzaType, State], Transition] = {
    # ---- A.2.1 (Table 2): outbound "subscribe", routed in every state
    (OUT, SUBSCRIBE, NONE): _row("A.2.1", NONE_OUT, PUSH, ROUTE),
    (OUT, SUBSCRIBE, NONE_OUT): _row("A.2.1", NONE_OUT, ROUTE),
    (OUT, SUBSCRIBE, NONE_IN): _row("A.2.1", NONE_OUT_IN, PUSH, ROUTE),
    (OUT, SUBSCRIBE, NONE_OUT_IN): _row("A.2.1", NONE_OUT_IN, ROUTE),
    (OUT, SUBSCRIBE, TO): _row("A.2.1", TO, ROUTE),
    (OUT, SUBSCRIBE, TO_IN): _row("A.2.1", TO_IN, ROUTE),
    (OUT, SUBSCRIBE, FROM): _row("A.2.1", FROM_OUT, PUSH, ROUTE),
    (OUT, SUBSCRIBE, FROM_OUT): _row("A.2.1", FROM_OUT, ROUTE),
    (OUT, SUBSCRIBE, BOTH): _row("A.2.1", BOTH, ROUTE),
    (OUT, SUBSCRIBE, NONE_PRE): _row("A.2.1, 3.4", NONE_OUT_PRE, PUSH, ROUTE),
    (OUT, SUBSCRIBE, NONE_OUT_PRE): _row("A.2.1, 3.4", NONE_OUT_PRE, ROUTE),
    (OUT, SUBSCRIBE, TO_PRE): _row("A.2.1, 3.4", TO_PRE, ROUTE),
    # ---- A.2.2 (Table 3): outbound "unsubscribe", routed in every state
    (OUT, UNSUBSCRIBE, NONE): _row("A.2.2", NONE, ROUTE),
    (OUT, UNSUBSCRIBE, NONE_OUT): _row("A.2.2", NONE, PUSH, ROUTE),
    (OUT, UNSUBSCRIBE, NONE_IN): _row("A.2.2", NONE_IN, ROUTE),
    (OUT, UNSUBSCRIBE, NONE_OUT_IN): _row("A.2.2", NONE_IN, PUSH, ROUTE),
    (OUT, UNSUBSCRIBE, TO): _row("A.2.2", NONE, PUSH, ROUTE),
    (OUT, UNSUBSCRIBE, TO_IN): _row("A.2.2", NONE_IN, PUSH, ROUTE),
    (OUT, UNSUBSCRIBE, FROM): _row("A.2.2", FROM, ROUTE),
    (OUT, UNSUBSCRIBE, FROM_OUT): _row("A.2.2", FROM, PUSH, ROUTE),
    (OUT, UNSUBSCRIBE, BOTH): _row("A.2.2", FROM, PUSH, ROUTE),
    (OUT, UNSUBSCRIBE, NONE_PRE): _row("A.2.2, 3.4", NONE_PRE, ROUTE),
    (OUT, UNSUBSCRIBE, NONE_OUT_PRE): _row("A.2.2, 3.4", NONE_PRE, PUSH, ROUTE),
    (OUT, UNSUBSCRIBE, TO_PRE): _row("A.2.2, 3.4", NONE_PRE, PUSH, ROUTE),
    # ---- A.2.3 (Table 4): outbound "subscribed"; approving a pending request
    # sends the user's presence after it (3.1.5); with none pending it is a
    # pre-approval [1], never routed (3.4)
    (OUT, SUBSCRIBED, NONE): _row("A.2.3 [1], 3.4", NONE_PRE, PUSH),
    (OUT, SUBSCRIBED, NONE_OUT): _row("A.2.3 [1], 3.4", NONE_OUT_PRE, PUSH),
    (OUT, SUBSCRIBED, NONE_IN): _row("A.2.3", FROM, PUSH, ROUTE, SEND_PRESENCE),
    (OUT, SUBSCRIBED, NONE_OUT_IN): _row("A.2.3", FROM_OUT, PUSH, ROUTE, SEND_PRESENCE),
    (OUT, SUBSCRIBED, TO): _row("A.2.3 [1], 3.4", TO_PRE, PUSH),
    (OUT, SUBSCRIBED, TO_IN): _row("A.2.3", BOTH, PUSH, ROUTE, SEND_PRESENCE),
    (OUT, SUBSCRIBED, FROM): _row("A.2.3", FROM),
    (OUT, SUBSCRIBED, FROM_OUT): _row("A.2.3", FROM_OUT),
    (OUT, SUBSCRIBED, BOTH): _row("A.2.3", BOTH),
    (OUT, SUBSCRIBED, NONE_PRE): _row("A.2.3 [1], 3.4", NONE_PRE),
    (OUT, SUBSCRIBED, NONE_OUT_PRE): _row("A.2.3 [1], 3.4", NONE_OUT_PRE),
    (OUT, SUBSCRIBED, TO_PRE): _row("A.2.3 [1], 3.4", TO_PRE),
    # ---- A.2.4 (Table 5): outbound "unsubscribed"; cancelling the contact's
    # subscription sends unavailable first (3.2.2); with nothing to deny it
    # cancels a pre-approval [1], never routed (3.4)
    (OUT, UNSUBSCRIBED, NONE): _row("A.2.4", NONE),
    (OUT, UNSUBSCRIBED, NONE_OUT): _row("A.2.4", NONE_OUT),
    (OUT, UNSUBSCRIBED, NONE_IN): _row("A.2.4", NONE, PUSH, ROUTE),
    (OUT, UNSUBSCRIBED, NONE_OUT_IN): _row("A.2.4", NONE_OUT, PUSH, ROUTE),
    (OUT, UNSUBSCRIBED, TO): _row("A.2.4", TO),
    (OUT, UNSUBSCRIBED, TO_IN): _row("A.2.4", TO, PUSH, ROUTE),
    (OUT, UNSUBSCRIBED, FROM): _row("A.2.4", NONE, PUSH, SEND_UNAVAILABLE, ROUTE),
    (OUT, UNSUBSCRIBED, FROM_OUT): _row("A.2.4", NONE_OUT, PUSH, SEND_UNAVAILABLE, ROUTE),
    (OUT, UNSUBSCRIBED, BOTH): _row("A.2.4", TO, PUSH, SEND_UNAVAILABLE, ROUTE),
    (OUT, UNSUBSCRIBED, NONE_PRE): _row("A.2.4 [1], 3.4", NONE, PUSH),
    (OUT, UNSUBSCRIBED, NONE_OUT_PRE): _row("A.2.4 [1], 3.4", NONE_OUT, PUSH),
    (OUT, UNSUBSCRIBED, TO_PRE): _row("A.2.4 [1], 3.4", TO, PUSH),
    # ---- A.3.1 (Table 6): inbound "subscribe"; a pre-approval answers it at
    # once [1] and sends the user's presence (3.4); already subscribed: the
    # server answers for the user [2]
    (IN, SUBSCRIBE, NONE): _row("A.3.1", NONE_IN, PUSH, DELIVER),
    (IN, SUBSCRIBE, NONE_OUT): _row("A.3.1", NONE_OUT_IN, PUSH, DELIVER),
    (IN, SUBSCRIBE, NONE_IN): _row("A.3.1", NONE_IN),
    (IN, SUBSCRIBE, NONE_OUT_IN): _row("A.3.1", NONE_OUT_IN),
    (IN, SUBSCRIBE, TO): _row("A.3.1", TO_IN, PUSH, DELIVER),
    (IN, SUBSCRIBE, TO_IN): _row("A.3.1", TO_IN),
    (IN, SUBSCRIBE, FROM): _row("A.3.1 [2]", FROM, REPLY_SUBSCRIBED),
    (IN, SUBSCRIBE, FROM_OUT): _row("A.3.1 [2]", FROM_OUT, REPLY_SUBSCRIBED),
    (IN, SUBSCRIBE, BOTH): _row("A.3.1 [2]", BOTH, REPLY_SUBSCRIBED),
    (IN, SUBSCRIBE, NONE_PRE): _row("A.3.1 [1], 3.4", FROM, PUSH, REPLY_SUBSCRIBED, SEND_PRESENCE),
    (IN, SUBSCRIBE, NONE_OUT_PRE): _row(
        "A.3.1 [1], 3.4", FROM_OUT, PUSH, REPLY_SUBSCRIBED, SEND_PRESENCE
    ),
    (IN, SUBSCRIBE, TO_PRE): _row("A.3.1 [1], 3.4", BOTH, PUSH, REPLY_SUBSCRIBED, SEND_PRESENCE),
    # ---- A.3.2 (Table 7): inbound "unsubscribe"; a contact that loses 'from'
    # gets the user's unavailable (3.3.3); no "unsubscribed" auto-reply [1]
    (IN, UNSUBSCRIBE, NONE): _row("A.3.2", NONE),
    (IN, UNSUBSCRIBE, NONE_OUT): _row("A.3.2", NONE_OUT),
    (IN, UNSUBSCRIBE, NONE_IN): _row("A.3.2", NONE, PUSH, DELIVER),
    (IN, UNSUBSCRIBE, NONE_OUT_IN): _row("A.3.2", NONE_OUT, PUSH, DELIVER),
    (IN, UNSUBSCRIBE, TO): _row("A.3.2", TO),
    (IN, UNSUBSCRIBE, TO_IN): _row("A.3.2", TO, PUSH, DELIVER),
    (IN, UNSUBSCRIBE, FROM): _row("A.3.2", NONE, PUSH, DELIVER, SEND_UNAVAILABLE),
    (IN, UNSUBSCRIBE, FROM_OUT): _row("A.3.2", NONE_OUT, PUSH, DELIVER, SEND_UNAVAILABLE),
    (IN, UNSUBSCRIBE, BOTH): _row("A.3.2", TO, PUSH, DELIVER, SEND_UNAVAILABLE),
    (IN, UNSUBSCRIBE, NONE_PRE): _row("A.3.2, 3.4", NONE_PRE),
    (IN, UNSUBSCRIBE, NONE_OUT_PRE): _row("A.3.2, 3.4", NONE_OUT_PRE),
    (IN, UNSUBSCRIBE, TO_PRE): _row("A.3.2, 3.4", TO_PRE),
    # ---- A.3.3 (Table 8): inbound "subscribed"; gaining 'to' brings the
    # contact's presence (3.1.6)
    (IN, SUBSCRIBED, NONE): _row("A.3.3", NONE),
    (IN, SUBSCRIBED, NONE_OUT): _row("A.3.3", TO, PUSH, DELIVER, DELIVER_CONTACT_PRESENCE),
    (IN, SUBSCRIBED, NONE_IN): _row("A.3.3", NONE_IN),
    (IN, SUBSCRIBED, NONE_OUT_IN): _row("A.3.3", TO_IN, PUSH, DELIVER, DELIVER_CONTACT_PRESENCE),
    (IN, SUBSCRIBED, TO): _row("A.3.3", TO),
    (IN, SUBSCRIBED, TO_IN): _row("A.3.3", TO_IN),
    (IN, SUBSCRIBED, FROM): _row("A.3.3", FROM),
    (IN, SUBSCRIBED, FROM_OUT): _row("A.3.3", BOTH, PUSH, DELIVER, DELIVER_CONTACT_PRESENCE),
    (IN, SUBSCRIBED, BOTH): _row("A.3.3", BOTH),
    (IN, SUBSCRIBED, NONE_PRE): _row("A.3.3, 3.4", NONE_PRE),
    (IN, SUBSCRIBED, NONE_OUT_PRE): _row(
        "A.3.3, 3.4", TO_PRE, PUSH, DELIVER, DELIVER_CONTACT_PRESENCE
    ),
    (IN, SUBSCRIBED, TO_PRE): _row("A.3.3, 3.4", TO_PRE),
    # ---- A.3.4 (Table 9): inbound "unsubscribed"; losing 'to' brings the
    # contact's unavailable (3.2.3)
    (IN, UNSUBSCRIBED, NONE): _row("A.3.4", NONE),
    (IN, UNSUBSCRIBED, NONE_OUT): _row("A.3.4", NONE, PUSH, DELIVER),
    (IN, UNSUBSCRIBED, NONE_IN): _row("A.3.4", NONE_IN),
    (IN, UNSUBSCRIBED, NONE_OUT_IN): _row("A.3.4", NONE_IN, PUSH, DELIVER),
    (IN, UNSUBSCRIBED, TO): _row("A.3.4", NONE, PUSH, DELIVER, DELIVER_CONTACT_UNAVAILABLE),
    (IN, UNSUBSCRIBED, TO_IN): _row("A.3.4", NONE_IN, PUSH, DELIVER, DELIVER_CONTACT_UNAVAILABLE),
    (IN, UNSUBSCRIBED, FROM): _row("A.3.4", FROM),
    (IN, UNSUBSCRIBED, FROM_OUT): _row("A.3.4", FROM, PUSH, DELIVER),
    (IN, UNSUBSCRIBED, BOTH): _row("A.3.4", FROM, PUSH, DELIVER, DELIVER_CONTACT_UNAVAILABLE),
    (IN, UNSUBSCRIBED, NONE_PRE): _row("A.3.4, 3.4", NONE_PRE),
    (IN, UNSUBSCRIBED, NONE_OUT_PRE): _row("A.3.4, 3.4", NONE_PRE, PUSH, DELIVER),
    (IN, UNSUBSCRIBED, TO_PRE): _row(
        "A.3.4, 3.4", NONE_PRE, PUSH, DELIVER, DELIVER_CONTACT_UNAVAILABLE
    ),
}


def transition(direction: Direction, typ: StanzaType, state: State) -> Transition:
    """The row for a subscription stanza of ``typ`` meeting ``state``."""
    return TRANSITIONS[(direction, typ, state)]


__all__ = [
    "BOTH",
    "FROM",
    "FROM_OUT",
    "NONE",
    "NONE_IN",
    "NONE_OUT",
    "NONE_OUT_IN",
    "NONE_OUT_PRE",
    "NONE_PRE",
    "STATES",
    "TO",
    "TO_IN",
    "TO_PRE",
    "TRANSITIONS",
    "Action",
    "Direction",
    "InvalidState",
    "StanzaType",
    "State",
    "Subscription",
    "Transition",
    "transition",
]
