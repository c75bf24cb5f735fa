"""The server as an operator runs it: the ``xmppd`` process, ``xmppctl``,
an external client (go-sendxmpp), SIGTERM, and a restart that keeps data."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import PASSWORD, Client, Raw, send_initial_presence, session_count, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.embedded_only]

BIN = Path(sys.executable).parent


def env_for(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        XMPPD_DATA_DIR=str(tmp / "data"),
        XMPPD_C2S_HOST="127.0.0.1",
        XMPPD_C2S_PORT="0",
        XMPPD_C2S_DIRECT_TLS_PORT="0",
        XMPPD_LOG_LEVEL="INFO",
        XMPPD_OPS_HOST="127.0.0.1",
        XMPPD_OPS_PORT="0",
    )
    return env


class ServerProcess:
    def __init__(self, tmp: Path) -> None:
        self.env = env_for(tmp)
        self.proc: asyncio.subprocess.Process | None = None
        self.ports: list[int] = []
        self.log = b""

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            str(BIN / "xmppd"), env=self.env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        assert self.proc.stderr is not None
        while len(self.ports) < 2:
            line = await asyncio.wait_for(self.proc.stderr.readline(), 20)
            assert line, self.log
            self.log += line
            m = re.search(rb"listening on [\d.]+:(\d+)", line)
            if m:
                self.ports.append(int(m.group(1)))

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 20)

    def ctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "xmppctl"), *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )


async def login(jid: str, port: int, password: str = PASSWORD) -> Client:
    c = Client(jid, password)
    c.enable_direct_tls = False
    started = asyncio.get_running_loop().create_future()
    c.add_event_handler("session_start", lambda _e: started.done() or started.set_result(True))
    c.add_event_handler("failed_auth", lambda _e: started.done() or started.set_result(False))
    c.connect("127.0.0.1", port)
    assert await asyncio.wait_for(started, 10), f"{jid} could not log in"
    await send_initial_presence(c)
    return c


async def test_xmppd_xmppctl_go_sendxmpp_and_sigterm(tmp_path):
    sendxmpp = shutil.which("go-sendxmpp")
    assert sendxmpp, "go-sendxmpp is required (make test installs it)"
    srv = ServerProcess(tmp_path)
    # xmppctl works before the server ever ran (straight on the database)
    assert srv.ctl("adduser", "alice@localhost", "--password", PASSWORD).returncode == 0
    await srv.start()
    try:
        # ... and through the control socket while it runs
        out = srv.ctl("adduser", "bob@localhost", stdin=PASSWORD + "\n")
        assert out.returncode == 0, out.stderr
        dup = srv.ctl("adduser", "bob@localhost", "--password", "x")
        assert dup.returncode == 1 and "exists" in dup.stderr
        assert srv.ctl("users").stdout.split() == ["alice@localhost", "bob@localhost"]
        bob = await login("bob@localhost/desk", srv.ports[0])
        sessions = srv.ctl("sessions").stdout
        assert "bob@localhost/desk" in sessions and "available" in sessions
        # go-sendxmpp logs in as alice over STARTTLS, then over direct TLS
        for port, flags in ((srv.ports[0], []), (srv.ports[1], ["-t"])):
            p = await asyncio.create_subprocess_exec(
                sendxmpp,
                "-n",
                *flags,
                "-u",
                "alice@localhost",
                "-p",
                PASSWORD,
                "-j",
                f"127.0.0.1:{port}",
                "bob@localhost",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            body = f"hello over {'direct TLS' if flags else 'STARTTLS'}"
            _out, err_b = await asyncio.wait_for(p.communicate(body.encode()), 30)
            assert p.returncode == 0, err_b
            m = await bob.next_message(10)
            assert m["body"] == body and m["from"].bare == "alice@localhost"
        # go-sendxmpp listening as alice receives what bob sends
        listener = await asyncio.create_subprocess_exec(
            sendxmpp,
            "-n",
            "-l",
            "-u",
            "alice@localhost",
            "-p",
            PASSWORD,
            "-j",
            f"127.0.0.1:{srv.ports[0]}",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            for _ in range(100):
                if "alice@localhost" in srv.ctl("sessions").stdout:
                    break
                await asyncio.sleep(0.1)
            bob.send_message(mto="alice@localhost", mbody="ping from slixmpp", mtype="chat")
            assert listener.stdout is not None
            line = await asyncio.wait_for(listener.stdout.readline(), 15)
            assert b"ping from slixmpp" in line
        finally:
            listener.kill()
            await listener.wait()
        # kick and delete through the running server
        assert "kicked 1" in srv.ctl("kick", "bob@localhost").stdout
        # SIGTERM: clients get system-shutdown and the process exits 0
        r = Raw(*await asyncio.open_connection("127.0.0.1", srv.ports[0]))
        await r.login(user="alice")
        assert await srv.stop() == 0
        await r.expect(b"<stream:error><system-shutdown")
        r.close()
    finally:
        if srv.proc and srv.proc.returncode is None:
            srv.proc.kill()
    assert not (tmp_path / "data" / "xmppd.sock").exists()


async def _no_session(srv) -> bool:
    return await session_count(srv) == 0


async def _offline_count(srv, user: str, n: int) -> bool:
    return await srv.store.count_offline("localhost", user) == n


async def test_restart_keeps_all_user_data(server_factory, tmp_path):
    from ..conftest import add_user

    srv = await server_factory()
    for u in ("alice", "bob"):
        await add_user(srv, u)
    port = srv.c2s_port
    alice = await login("alice@localhost/a", port)
    for p in ("xep_0054", "xep_0049", "xep_0191", "xep_0030"):
        alice.register_plugin(p)
    await alice.get_roster()
    await alice.update_roster("bob@localhost", name="Bobby", groups=["Work"])
    vc = alice.plugin["xep_0054"].make_vcard()
    vc["FN"] = "Alice Persisted"
    await alice.plugin["xep_0054"].publish_vcard(vc)
    from slixmpp.xmlstream import ET as SET

    note = SET.fromstring("<notes xmlns='urn:example:notes'><n>remember</n></notes>")
    iq = alice.make_iq_set(ito="alice@localhost")
    q = SET.SubElement(iq.xml, "{jabber:iq:private}query")
    q.append(note)
    await iq.send(timeout=5)
    await alice.plugin["xep_0191"].block("spam@localhost")
    await asyncio.wait_for(alice.disconnect(), 10)
    await wait_until(lambda: _no_session(srv), what="alice's session gone")
    bob = await login("bob@localhost/b", port)
    bob.send_message(mto="alice@localhost", mbody="while you were out", mtype="chat")
    await wait_until(lambda: _offline_count(srv, "alice", 1), what="the message stored")
    await asyncio.wait_for(bob.disconnect(), 10)
    await srv.stop()

    srv2 = await server_factory()  # same data folder
    port = srv2.c2s_port
    alice = await login("alice@localhost/a", port)
    for p in ("xep_0054", "xep_0049", "xep_0191", "xep_0030"):
        alice.register_plugin(p)
    m = await alice.next_message()
    assert m["body"] == "while you were out"
    roster = await alice.get_roster()
    item = roster["roster"]["items"]["bob@localhost"]
    assert item["name"] == "Bobby" and item["groups"] == ["Work"]
    got = await alice.plugin["xep_0054"].get_vcard("alice@localhost", local=False, cached=False)
    assert got["vcard_temp"]["FN"] == "Alice Persisted"
    iq = alice.make_iq_get(ito="alice@localhost")
    q = SET.SubElement(iq.xml, "{jabber:iq:private}query")
    SET.SubElement(q, "{urn:example:notes}notes")
    res = await iq.send(timeout=5)
    assert res.xml.find(".//{urn:example:notes}n").text == "remember"
    blocked = await alice.plugin["xep_0191"].get_blocked()
    assert {i.get("jid") for i in blocked.xml.iter("{urn:xmpp:blocking}item")} == {"spam@localhost"}
    alice.disconnect()
