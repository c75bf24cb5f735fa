"""Which replica a control-plane call goes to first (services/cluster/rpc.py)."""

from __future__ import annotations

from collections import Counter

from services.cluster.rpc import affinity
from services.core.routing import Envelope, Session
from services.xmpp.jid import JID


def test_calls_about_one_user_prefer_one_replica() -> None:
    a1, a2 = JID.parse("alice@example.com/one"), JID.parse("alice@example.com/two")
    s = Session(jid=a1, node="edge1")
    env = Envelope("presence", None, None, a2, a2.bare, b"<presence/>")
    picks = {
        affinity((s,), 3),
        affinity((env,), 3),
        affinity((a1, "sid"), 3),
        affinity((a2.bare,), 3),
    }
    assert len(picks) == 1


def test_users_spread_over_every_replica() -> None:
    users = [Session(jid=JID.parse(f"u{i}@example.com/r"), node="e") for i in range(200)]
    spread = Counter(affinity((s,), 3) for s in users)
    assert set(spread) == {0, 1, 2} and min(spread.values()) > 40
    hosts = Counter(affinity(("example.com", f"u{i}", "SHA-1"), 2) for i in range(100))
    assert set(hosts) == {0, 1}


def test_one_replica_or_no_arguments() -> None:
    assert affinity((Session(jid=JID.parse("a@b/c"), node="e"),), 1) == 0
    assert affinity((), 4) == 0
