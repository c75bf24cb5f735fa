"""Smoke tests of the benchmark's load generator against our servers.

Tiny sizes: the real ``xmppd`` process on a loopback port with a temporary
data folder (bench/run.py's Embedded target), the multiprocess load generator,
and every scenario once; then (marked slow: it starts six processes) the
cluster target against the local PostgreSQL and Redis, with messages crossing
its two edges. The figures are not checked, only that nothing is lost and the
reports hold sane values.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time

import pytest

from bench import loadgen
from bench.run import (
    PASSWORD,
    PG_DSN,
    REDIS_URL,
    Cluster,
    Embedded,
    Sizes,
    Users,
    cluster_backends_missing,
    edge_scaling,
    muc_markdown,
    pep_markdown,
    results_markdown,
)
from services.platform.tls import ensure_self_signed
from services.xmpp.sasl import derive_credentials


def test_splitter_cuts_elements_whatever_the_chunking():
    stream = (
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' id='x'>"
        b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        b"<message to='a@b/c' type='chat'><body>1 2</body></message>"
        b"<presence from='a@b/c'/><iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"
        b"</stream:stream>"
    )
    whole = loadgen.Splitter().feed(stream)
    split = loadgen.Splitter()
    parts: list[bytes] = []
    for i in range(len(stream)):
        parts.extend(split.feed(stream[i : i + 1]))
    assert parts == whole
    assert [p[:9] for p in whole] == [
        b"<stream:s",
        b"<stream:f",
        b"<message ",
        b"<presence",
        b"<iq type=",
        b"</stream:",
    ]


def test_scram_client_matches_the_server_side():
    creds = derive_credentials("pencil", "SHA-1", salt=b"saltsaltsalt")
    scram = loadgen.Scram("sha1", "user", "pencil")
    nonce = scram.nonce + "server"
    server_first = f"r={nonce},s={base64.b64encode(creds.salt).decode()},i={creds.iterations}"
    final = scram.final(server_first.encode()).decode()
    proof = base64.b64decode(final.rsplit("p=", 1)[1])
    auth_msg = f"{scram.bare},{server_first},{final.rsplit(',p=', 1)[0]}".encode()
    sig = hmac.new(creds.stored_key, auth_msg, "sha1").digest()
    client_key = bytes(a ^ b for a, b in zip(proof, sig, strict=True))
    assert hashlib.sha1(client_key).digest() == creds.stored_key
    server_sig = hmac.new(creds.server_key, auth_msg, "sha1").digest()
    scram.verify(b"v=" + base64.b64encode(server_sig))


@pytest.fixture
def embedded(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key, ["localhost"])
    sizes = Sizes(logins=10, msg_clients=10, idle=10, presence_users=8, contacts=4)
    sizes.scale_conns, sizes.muc_rooms, sizes.pep_sizes = 10, "2x3,1x4", "1x3,2x3"
    users = Users.make(sizes, pep=True)
    target = Embedded(tmp_path, cert, key, tmp_path)
    target.start(users)
    yield target, users
    target.stop()


def test_every_scenario_against_the_embedded_server(embedded):
    target, users = embedded
    probe = loadgen.ProcTree(target.pid)
    creds = [(u, PASSWORD) for u in users.plain]
    with loadgen.LoadGen(loadgen.Target("127.0.0.1", target.port, "localhost"), 2) as lg:
        login = loadgen.login_storm(lg, probe, creds, "SCRAM-SHA-1", 10, settle=0.1)
        msgs = loadgen.messages(
            lg, probe, creds, "PLAIN", window=2, closed_s=1.0, rate=200.0, rate_s=1.0,
            warmup=0.3, drain=5.0, settle=0.1,
        )  # fmt: skip
        idle = loadgen.idle(lg, probe, creds, "PLAIN", hold_s=0.3, settle=0.2)
        pres = loadgen.presence_storm(
            lg, probe, [(u, PASSWORD) for u in users.presence], [len(c) for c in users.contacts],
            "SCRAM-SHA-1", timeout=10, settle=0.1,
        )  # fmt: skip
    for res in (login, msgs, idle, pres):
        json.dumps(res)  # JSON-able
        assert loadgen.table(res)

    assert login["ok"] == 10 and login["failed"] == 0, login["failures"]
    assert login["logins_per_s"] > 0
    assert 0 < login["latency_ms"]["p50"] <= login["latency_ms"]["p99"]
    assert login["server_cpu_ms_per_login"] > 0
    assert login["loadgen_cpu_s"] > 0

    assert msgs["logged_in"] == 10 and msgs["login_failed"] == 0, msgs["failures"]
    assert msgs["first_message"]["delivered"] == 10
    closed, rate = msgs["closed"], msgs["rate"]
    for phase in (msgs["first_message"], closed, rate):
        assert phase["lost"] == 0 and phase["errors"] == 0 and phase["dropped_connections"] == 0
    assert closed["delivered_in_window"] > 0 and closed["msgs_per_s"] > 0
    assert 0 < closed["latency_ms"]["p50"] <= closed["latency_ms"]["p99"]
    assert closed["server_cpu_us_per_msg"] > 0
    # how many of the ~200 land inside the 1 s window is speed (make bench), not
    # behaviour: here only that every one sent arrived, and the window's count is sane
    assert rate["sent"] > 0 and rate["sent"] == rate["delivered"]
    assert 0 <= rate["delivered_in_window"] <= rate["delivered"]

    assert idle["ok"] == 10 and idle["failed"] == 0
    assert idle["rss_after_mb"] > 0

    assert pres["ok"] == 8 and pres["failed"] == 0
    assert pres["incomplete_users"] == 0 and pres["missing_presences"] == 0
    # each user sees its 4 contacts and itself at least once
    assert pres["presences_delivered"] >= 8 * 5


def test_group_chat_scenario_against_the_embedded_server(embedded):
    target, users = embedded
    probe = loadgen.ProcTree(target.pid)
    creds = [(u, PASSWORD) for u in users.plain]
    with loadgen.LoadGen(loadgen.Target("127.0.0.1", target.port, "localhost"), 2) as lg:
        res = loadgen.muc(
            lg, probe, creds, [(2, 3), (1, 4)], "PLAIN", senders=2, window=2, duration=0.5,
            warmup=0.2, drain=5.0, settle=0.1,
        )  # fmt: skip
    json.dumps(res)
    assert loadgen.table(res)
    assert res["service"] == "conference.localhost" and res["lost_total"] == 0
    assert list(res["phases"]) == ["2x3", "1x4"]
    for (rooms, size), ph in zip([(2, 3), (1, 4)], res["phases"].values(), strict=True):
        assert "error" not in ph, ph
        assert ph["logged_in"] == rooms * size and ph["join"]["joined"] == rooms * size
        assert ph["join"]["missing_subjects"] == 0
        assert ph["senders"] == rooms * 2
        # every message posted reached every occupant, the sender's echo included
        assert ph["sent"] > 0 and ph["delivered"] == ph["expected_deliveries"] == ph["sent"] * size
        assert ph["lost"] == ph["incomplete_messages"] == ph["errors"] == ph["unexpected"] == 0
        assert ph["dropped_connections"] == 0
        assert ph["deliveries_per_s"] > 0 and ph["server_cpu_us_per_delivery"] > 0
        assert 0 < ph["latency_ms"]["p50"] <= ph["latency_ms"]["p99"]


def test_pep_scenario_against_the_embedded_server(embedded):
    """Publishers with contacts in mutual subscriptions; contacts log in with
    caps asking for the bench node (the server asks what their ver stands
    for), every publish reaches every contact, nothing is lost."""
    target, users = embedded
    assert users.pep == [("q0", ["q0c0", "q0c1", "q0c2"]), ("q1", ["q1c0", "q1c1", "q1c2"])]
    probe = loadgen.ProcTree(target.pid)
    with loadgen.LoadGen(loadgen.Target("127.0.0.1", target.port, "localhost"), 2) as lg:
        res = loadgen.pep(
            lg, probe, users.pep_creds(PASSWORD), [(1, 3), (2, 3)], "PLAIN", window=2,
            duration=0.5, warmup=0.2, drain=5.0, ready_timeout=15.0, settle=0.1,
        )  # fmt: skip
    json.dumps(res)
    assert loadgen.table(res)
    assert res["node"] == loadgen.PEP_NODE and res["lost_total"] == 0
    assert list(res["phases"]) == ["1x3", "2x3"]
    for (pubs, size), ph in zip([(1, 3), (2, 3)], res["phases"].values(), strict=True):
        assert "error" not in ph, ph
        assert ph["logged_in"] == pubs * (size + 1) and ph["login_failed"] == 0
        assert ph["prime"]["ready"] == ph["prime"]["contacts"] == pubs * size
        # every publish was acknowledged and reached every contact
        assert ph["sent"] > 0 and ph["acked"] == ph["sent"]
        assert ph["delivered"] == ph["expected_notifications"] == ph["sent"] * size
        assert ph["lost"] == ph["incomplete_publishes"] == ph["errors"] == 0
        # no contact had a publish twice; the publisher asked for none and had none
        assert ph["duplicates"] == ph["to_publisher"] == ph["dropped_connections"] == 0
        assert ph["notifications_per_s"] > 0 and ph["server_cpu_us_per_notification"] > 0
        assert 0 < ph["latency_ms"]["p50"] <= ph["latency_ms"]["p99"]
    # the server asked what the contacts' caps ver stands for, from its pubsub service
    first = res["phases"]["1x3"]["prime"]
    assert first["caps_queries"] >= 1 and first["caps_queried_by"] == ["pubsub.localhost"]
    md = "\n".join(
        pep_markdown(
            {
                "targets": [
                    {"target": "embedded", "label": "xmppd embedded", "available": True,
                     "scenarios": {"pep": res}},
                ]
            }
        )
    )  # fmt: skip
    assert "| 1 publisher x 3 contacts: notifications/s | higher |" in md
    assert "| 2 publishers x 3 contacts: lost notifications (must be 0) | lower | 0.00 |" in md


def test_caps_ver_and_the_disco_answer_agree_with_the_server():
    """The load generator's caps ver is what xmppd computes over its disco#info answer."""
    from lxml import etree

    from services.features.disco import ver_of_info

    answer = loadgen.disco_info_result(b"q1", b"pubsub.localhost", b"n#v")
    query = etree.fromstring(answer)[0]
    assert query.get("node") == "n#v"
    assert ver_of_info(query) == loadgen.CLIENT_VER
    # XEP-0115 5.2's example
    assert (
        loadgen.caps_ver(
            [("client", "pc", "", "Exodus 0.9.1")],
            [
                "http://jabber.org/protocol/caps",
                "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/disco#items",
                "http://jabber.org/protocol/muc",
            ],
        )
        == "QgayPKawpkPSDYmwT/WM94uAlu0="
    )
    assert loadgen.pep_specs("1x100,5x100") == [(1, 100), (5, 100)]
    assert loadgen.pep_specs("1,5", contacts=20) == [(1, 20), (5, 20)]
    assert loadgen.pep_specs("1x100", contacts=7) == [(1, 7)]
    for bad in ("", "x5", "1x0", "0x5", "5", "ax5"):
        with pytest.raises(ValueError):
            loadgen.pep_specs(bad)


def test_room_specs():
    assert loadgen.room_specs("10x10,2x100") == [(10, 10), (2, 100)]
    assert loadgen.room_specs(" 1X5 ,") == [(1, 5)]
    for bad in ("", "10", "x10", "10x1", "0x10", "2x3x4", "ax5"):
        with pytest.raises(ValueError):
            loadgen.room_specs(bad)
    s = Sizes(muc_rooms="10x10,2x100")
    assert s.muc_clients() == 200
    assert len(Users.make(Sizes.quick()).plain) >= Sizes.quick().muc_clients()


def test_occupancy_follows_a_join():
    occ = loadgen.Occupancy(b"r@conference.localhost", b"n0", 3)
    assert occ.join_stanza() == (
        b"<presence to='r@conference.localhost/n0'><x xmlns='http://jabber.org/protocol/muc'>"
        b"<history maxstanzas='0'/></x></presence>"
    )
    cfg = occ.configure_stanza(b"cfg1")
    assert b"to='r@conference.localhost'" in cfg and b"muc#owner" in cfg and b"submit" in cfg
    occ.on_presence(b"<presence from='other@conference.localhost/n1' to='u0@localhost/r'/>")
    occ.on_presence(b"<presence from='u1@localhost/r' to='u0@localhost/r'/>")
    assert occ.roster == set()
    occ.on_presence(
        b"<presence from='r@conference.localhost/n1' to='u0@localhost/r'>"
        b"<x xmlns='http://jabber.org/protocol/muc#user'><item role='participant'/></x></presence>"
    )
    assert not occ.entered
    occ.on_presence(b'<presence from="r@conference.localhost/n0"><status code="110"/></presence>')
    assert occ.roster == {b"n0", b"n1"} and occ.entered
    occ.on_presence(b"<presence type='unavailable' from='r@conference.localhost/n1'/>")
    assert occ.roster == {b"n0"}
    occ.on_iq(b"<iq type='result' id='other' from='r@conference.localhost'/>")
    assert not occ.iq_result
    occ.on_iq(b"<iq type='result' id='cfg1' from='r@conference.localhost'/>")
    assert occ.iq_result and not occ.error
    occ.on_presence(b"<presence type='error' from='r@conference.localhost/n2'><error/></presence>")
    assert "error" in occ.error


class _Writer:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def is_closing(self) -> bool:
        return False


def test_groupchat_closed_loop_counts_each_delivery():
    """A message is complete when all occupants have it; only then its sender
    posts the next (while the loop runs). Subjects end joins; errors count."""
    w = loadgen.Worker(None, 0, loadgen.Target("127.0.0.1", 1, "localhost"))  # type: ignore[arg-type]
    members = []
    for k in range(3):
        c = loadgen.Client(w, f"u{k}", "pw", "r")
        c.writer = _Writer()  # type: ignore[assignment]
        c.muc = loadgen.Occupancy(b"r@conference.localhost", b"n%d" % k, 3)
        members.append(c)
    sender = members[0]
    members[1].on_element(
        b"<message from='r@conference.localhost' type='groupchat'><subject></subject></message>"
    )
    assert members[1].muc.joined and not members[2].muc.joined  # type: ignore[union-attr]
    w.m0, w.m1 = 0, 2**62
    w.refill = True
    sender.send_groupchat()
    posted = sender.writer.out[-1]  # type: ignore[union-attr]
    assert posted.startswith(b"<message to='r@conference.localhost' type='groupchat' id='g1'>")
    body = posted[posted.find(b"<body>") + 6 : posted.find(b"</body>")]
    echo = b"<message from='r@conference.localhost/n0' type='groupchat'><body>%s</body></message>"
    assert w.sent == 1 and w.expected == 3 and list(w.pending) == [1]
    for c in members[:2]:
        c.on_element(echo % body)
    assert w.received == 2 and w.pending[1][0] == 1 and len(sender.writer.out) == 1  # type: ignore[union-attr]
    members[2].on_element(echo % body)
    assert w.received == 3 and w.in_window == 3 and len(w.lat) == 3
    assert 1 not in w.pending and w.sent == 2  # the next one is out
    assert len(sender.writer.out) == 2  # type: ignore[union-attr]
    members[2].on_element(echo % body)  # a duplicate
    assert w.unexpected == 1 and w.received == 4
    members[1].on_element(
        b"<message from='r@conference.localhost' type='error'><body>1 2</body><error/></message>"
    )
    assert w.errors == 1 and w.error_samples and w.received == 4


def test_pep_closed_loop_counts_each_contact_once():
    """A publish is complete when every contact has its notification once; a
    contact's second copy (Prosody 0.12 sends one to a contact it also
    lists by bare JID) is a duplicate and cannot stand in for a missing
    contact; copies to the publisher count apart; caps queries are answered."""
    w = loadgen.Worker(None, 0, loadgen.Target("127.0.0.1", 1, "localhost"))  # type: ignore[arg-type]
    pub = loadgen.Client(w, "q0", "pw", "r")
    contacts = [loadgen.Client(w, f"q0c{k}", "pw", "r") for k in range(2)]
    for c in (pub, *contacts):
        c.writer = _Writer()  # type: ignore[assignment]
    pub.pep = loadgen.PepRole(2)
    pub.pep.contacts = contacts
    for c in contacts:
        c.pep = loadgen.PepRole(2, pub)
    w.pep_tag, w.pep_publish = b"t1", loadgen.pep_publish_template("t1")
    w.m0, w.m1, w.refill = 0, 2**62, True
    pub.send_publish()
    posted = pub.writer.out[-1]  # type: ignore[union-attr]
    assert posted.startswith(b"<iq type='set' id='p1'><pubsub")
    assert b"<publish node='urn:xmpp:bench:pep'><item id='current'>" in posted
    stamp = posted[posted.find(b"<stamp") : posted.find(b"</item>")]
    note = b"<message from='q0@localhost' type='headline'><event xmlns='%s'><items node='%s'>" % (
        b"http://jabber.org/protocol/pubsub#event",
        loadgen.PEP_NODE.encode(),
    )
    note += b"<item id='current'>%s</item></items></event></message>" % stamp
    contacts[0].on_element(note)
    contacts[0].on_element(note)  # the same contact again
    assert w.received == 1 and w.duplicates == 1 and w.pending[1][0] == 1
    assert len(pub.writer.out) == 1  # type: ignore[union-attr]
    pub.on_element(note)  # the publisher's own session
    assert w.to_publisher == 1
    contacts[1].on_element(note)
    assert w.received == 2 and 1 not in w.pending and w.in_window == 2 and len(w.lat) == 2
    assert len(pub.writer.out) == 2  # type: ignore[union-attr]  # the next publish
    contacts[1].on_element(note)  # after completion: still a duplicate
    assert w.duplicates == 2 and w.received == 2
    # a prime (seq 0) marks a contact ready; an earlier phase's item is stale
    prime = note.replace(b">t1 1 ", b">t1 0 ")
    assert not contacts[0].pep.ready  # type: ignore[union-attr]
    contacts[0].on_element(prime)
    assert contacts[0].pep.ready  # type: ignore[union-attr]
    contacts[0].on_element(note.replace(b">t1 ", b">t0 "))
    assert w.stale == 1 and w.received == 2
    # the server asks what the caps ver stands for: the answer echoes id, from and node
    contacts[0].on_element(
        b"<iq type='get' id='caps-1' from='pubsub.localhost' to='q0c0@localhost/r'>"
        b"<query xmlns='http://jabber.org/protocol/disco#info' node='urn:xmpp:bench:client#V'/>"
        b"</iq>"
    )
    answer = contacts[0].writer.out[-1]  # type: ignore[union-attr]
    assert answer.startswith(b"<iq type='result' id='caps-1' to='pubsub.localhost'>")
    assert b"node='urn:xmpp:bench:client#V'" in answer and b"pep+notify" in answer
    assert w.disco_answered == 1 and w.disco_from == {"pubsub.localhost"}


def test_group_chat_table_has_ratios_and_the_cluster_breakdown():
    def phase(rate: float, us: float, parts: dict | None = None) -> dict:
        ph = {
            "rooms": 10, "occupants_per_room": 10, "deliveries_per_s": rate,
            "latency_ms": {"p50": 1.0, "p99": 2.0}, "server_cpu_us_per_delivery": us, "lost": 0,
            "posted_per_s": rate / 10, "server_cores": 1.0, "loadgen_cores": 0.5,
            "machine_busy_cores": 1.9, "join": {"wall_s": 0.1}, "delivered_in_window": 1000,
            "duration_s": 10.0,
        }  # fmt: skip
        if parts:
            ph["server_cpu_parts_s"] = parts
        return ph

    def target(name: str, label: str, ph: dict) -> dict:
        return {
            "target": name,
            "label": label,
            "available": True,
            "scenarios": {"muc": {"phases": {"10x10": ph}}},
        }

    run = {
        "targets": [
            target("embedded", "xmppd embedded", phase(20000.0, 40.0)),
            target("prosody", "Prosody", phase(10000.0, 80.0)),
            target("cluster", "xmppd cluster", phase(5000.0, 400.0, {"muc": 0.2, "edge1": 0.1})),
        ]
    }
    md = "\n".join(muc_markdown(run))
    assert "| 10 rooms x 10: deliveries/s (messages fanned out) | higher | 20,000 | 10,000 |" in md
    assert "2.00 (better)" in md and "0.50 (better)" in md  # msgs/s and CPU per delivery
    assert "| group chat (muc) | 200 | 0.02 |" in md
    assert muc_markdown({"targets": [{"target": "embedded", "label": "x", "scenarios": {}}]}) == []


def test_procset_follows_processes_and_accumulates_cpu():
    me = os.getpid()
    probe = loadgen.ProcSet(
        {"me": loadgen.tree(me), "named": loadgen.named(loadgen.scan_procs()[me][0].decode())},
        memory=["me"],
    )
    assert me in probe.pids()["me"] and me in probe.pids()["named"]
    before = probe.parts()
    t_end = time.process_time() + 0.05
    while time.process_time() < t_end:
        pass
    after = probe.parts()
    assert after["me"] >= before["me"] and after["named"] >= before["named"]
    assert after["me"] + after["named"] > before["me"] + before["named"]
    assert set(probe.rss_parts()) == {"me"} and probe.rss() > 0


def test_clients_alternate_over_ports_so_pairs_cross():
    lg = loadgen.LoadGen(loadgen.Target("127.0.0.1", 1, "localhost", (1, 2)), 2)
    sent: list[dict] = []
    lg.call_all = lambda cmds, timeout=0: [  # type: ignore[method-assign]
        sent.extend(cmds) or {"ok": 0, "failed": 0, "failures": [], "lat": b"", "start": 0.0,
                              "end": 0.0, "cpu_s": 0.0} for _ in cmds
    ]  # fmt: skip
    lg.conns = [None, None]  # type: ignore[list-item]
    users = [(f"u{i}", "pw") for i in range(8)]
    lg.login(users, "PLAIN", 4, "r", pairs=True)
    port_of = {u: port for c in sent for (u, _pw), port in zip(c["users"], c["ports"], strict=True)}
    assert port_of == {f"u{i}": 1 + i % 2 for i in range(8)}
    sent.clear()
    lg.login(users, "PLAIN", 4, "r", ports=[7])
    assert {p for c in sent for p in c["ports"]} == {7}


async def _leftovers(database: str, prefix: str) -> tuple[bool, int]:
    import asyncpg
    import redis.asyncio as aioredis

    conn = await asyncpg.connect(f"{PG_DSN}/postgres")
    try:
        db = bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database))
    finally:
        await conn.close()
    r = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in r.scan_iter(match=prefix + "*", count=1000)]
    finally:
        await r.aclose()
    return db, len(keys)


@pytest.mark.slow
def test_cluster_target_messages_cross_its_two_edges(tmp_path):
    why = cluster_backends_missing()
    if why:
        if os.environ.get("XMPPD_REQUIRE_POSTGRES") == "1":
            pytest.fail(why)
        pytest.skip(why)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key, ["localhost"])
    sizes = Sizes(logins=10, msg_clients=10, idle=10, presence_users=4, contacts=2)
    sizes.scale_conns, sizes.scale_hold_s, sizes.muc_rooms = 10, 0.2, "1x4"
    users = Users.make(sizes)
    target = Cluster(tmp_path, cert, key, tmp_path)
    creds = [(u, PASSWORD) for u in users.plain[:10]]
    try:
        target.start(users)
        assert len(set(target.ports)) == 2
        probe = target.probe()
        groups = probe.pids()
        assert {"edge1", "edge2", "router1", "router2", "presence", "storage"} <= set(groups)
        assert groups["redis"], "the Redis server's process was not found"
        lg_target = loadgen.Target("127.0.0.1", target.port, "localhost", target.ports)
        with loadgen.LoadGen(lg_target, 2) as lg:
            # pairs (2i, 2i+1) are on different edges: every message crosses
            # edge -> router -> the other edge; a short closed loop, then about
            # 200 at 200 msg/s
            msgs = loadgen.messages(
                lg, probe, creds, "PLAIN", window=2, closed_s=0.5, rate=200.0, rate_s=1.0,
                warmup=0.2, drain=5.0, settle=0.1,
            )  # fmt: skip
            # what the edge-scaling scenario does before each phase, once here
            edge_pids = probe.pids()["edge1"]
            target.restart_edges()
            assert probe.pids()["edge1"] != edge_pids  # the probe follows restarted edges
            edges = edge_scaling(
                lg, probe, creds, sizes, target.ports, target.nofile_limits(), settle=0.2
            )
    finally:
        target.stop()
    assert msgs["logged_in"] == 10 and msgs["login_failed"] == 0, msgs["failures"]
    first, closed, rate = msgs["first_message"], msgs["closed"], msgs["rate"]
    phases = {
        k: {x: v for x, v in msgs[k].items() if x != "latency_ms"}
        for k in ("first_message", "closed", "rate")
    }
    assert first["delivered"] == 10, phases
    assert rate["sent"] > 0 and rate["delivered"] == rate["sent"], phases
    assert closed["sent"] + rate["sent"] >= 200, phases
    for phase in (first, closed, rate):
        assert phase["lost"] == 0 and phase["errors"] == 0 and phase["dropped_connections"] == 0, (
            phases
        )
    parts = rate["server_cpu_parts_s"]
    assert parts["edge1"] > 0 and parts["edge2"] > 0, parts  # both edges carried traffic
    assert rate["server_cpu_us_per_msg"] > 0

    one, two = edges["edges_1"], edges["edges_2"]
    assert one["ok"] == two["ok"] == 10 and one["failed"] == two["failed"] == 0
    assert one["ports"] == [target.ports[0]] and two["ports"] == list(target.ports)
    assert one["server_cores_parts"]["edge2"] < one["server_cores_parts"]["edge1"]
    assert edges["ratio_2_to_1"]["logins_per_s"] is not None

    # the report renders the cluster's tables; nothing is left behind
    run = {
        "stamp": "test",
        "machine": {"cpus": 2, "cpu_model": "x", "loadavg_at_start": [0, 0, 0]},
        "sizes": vars(sizes),
        "scenarios": ["messages", "edges"],
        "targets": [
            {
                "target": "cluster",
                "label": "xmppd cluster",
                "available": True,
                "scenarios": {"messages": msgs, "edges": edges},
            }
        ],
    }
    md = results_markdown(run)
    assert "1 edge vs 2 edges" in md and "Redis (shared with the machine)" in md
    assert asyncio.run(_leftovers(target.database, target.redis_prefix)) == (False, 0)
