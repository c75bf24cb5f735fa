"""Smoke test of the benchmark's load generator against our embedded server.

Tiny sizes: the real ``xmppd`` process on a loopback port with a temporary
data folder (bench/run.py's Embedded target), the multiprocess load generator,
and every scenario once. The figures are not checked, only that nothing is
lost and the reports hold sane values.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from bench import loadgen
from bench.run import PASSWORD, Embedded, Sizes, Users
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
    users = Users.make(sizes)
    target = Embedded(tmp_path, cert, key, tmp_path)
    target.start(users)
    yield target, users
    target.stop()


def test_every_scenario_against_the_embedded_server(embedded):
    target, users = embedded
    t0 = time.monotonic()
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
    # 200 msg/s for 1 s: about 200 in the window
    assert 150 <= rate["delivered_in_window"] <= 250
    assert rate["sent"] == rate["delivered"]

    assert idle["ok"] == 10 and idle["failed"] == 0
    assert idle["rss_after_mb"] > 0

    assert pres["ok"] == 8 and pres["failed"] == 0
    assert pres["incomplete_users"] == 0 and pres["missing_presences"] == 0
    # each user sees its 4 contacts and itself at least once
    assert pres["presences_delivered"] >= 8 * 5
    assert time.monotonic() - t0 < 20
