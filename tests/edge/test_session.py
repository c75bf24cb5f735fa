"""A client session outlives its transport: detached, it keeps receiving
(output waits in its stream); attached to another transport, what waited
goes out there; the end of the transport ends it only when said so."""

from __future__ import annotations

from typing import Any

from services.edge.session import ClientSession
from services.xmpp.errors import StreamError
from tests.conftest import add_user, wait_until
from tests.webclient import WsClient


class Collecting:
    """A transport that keeps what it is given (the one a resumed stream
    would get, XEP-0198)."""

    ip = "127.0.0.1"

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self.frames: list[bytes] = []

    def flush(self) -> None:
        self.frames += self.session.stream.frames_to_send()

    def schedule_flush(self) -> None:
        self.flush()

    def close(self, error: StreamError | None) -> None:
        self.session.stream.close(error)
        self.flush()

    def stream_ended(self) -> None:
        self.flush()

    async def start_tls(self) -> bool:
        return False

    def bound(self, admin: bool) -> None:
        pass


async def test_detached_session_keeps_its_output_for_the_next_transport(
    server_factory: Any, connect: Any
) -> None:
    srv = await server_factory()
    for name in ("alice", "bob"):
        await add_user(srv, name)
    bob = await connect("bob@localhost/b", srv=srv)
    ws = await WsClient.open(srv.http_port)
    jid = await ws.login("alice", resource="web")
    (session,) = [s for s in srv.edge.local.values() if str(s.jid) == jid]
    old = session.transport
    session.detach()
    assert session.transport is None
    # still bound and routable while no transport carries it
    bob.send_message(mto=jid, mbody="while away", mtype="chat")
    await wait_until(lambda: b"while away" in b"".join(session.stream._out), what="queued")
    new = Collecting(session)
    session.attach(new)
    assert any(b"while away" in f for f in new.frames), new.frames
    # and it goes on over the new transport
    bob.send_message(mto=jid, mbody="after", mtype="chat")
    await wait_until(lambda: any(b"after" in f for f in new.frames), what="delivered")
    assert str(session.jid) in {str(j) for j in srv.edge.local}
    # the old socket closing no longer concerns the session: only the
    # transport's end for good (transport_gone) unbinds it
    assert old is not None
    await ws.close()
    await wait_until(
        lambda: (
            srv.metrics.registry.get_sample_value("xmppd_connections", {"transport": "websocket"})
            == 0
        ),
        what="the websocket closed",
    )
    assert session.jid in srv.edge.local and session in srv.edge.sessions
    await session.transport_gone(new)
    assert session.jid not in srv.edge.local and session not in srv.edge.sessions
