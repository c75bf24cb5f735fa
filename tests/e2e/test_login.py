"""Logging in with slixmpp over STARTTLS and direct TLS, with each mechanism."""

from __future__ import annotations

import pytest

from ..conftest import PASSWORD, Client


@pytest.mark.parametrize("direct_tls", [False, True])
async def test_login_default_mechanism(connect, direct_tls):
    c: Client = await connect("alice@localhost/desk", direct_tls=direct_tls)
    assert str(c.boundjid) == "alice@localhost/desk"


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"])
async def test_login_each_mechanism(connect, mech):
    c = await connect("bob@localhost/m", sasl_mech=mech)
    assert c.boundjid.bare == "bob@localhost"


async def test_wrong_password_fails(connect):
    with pytest.raises(PermissionError):
        await connect("alice@localhost/x", "not-the-password")


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
@pytest.mark.parametrize("direct_tls", [False, True])
async def test_scram_over_raw_socket_with_channel_binding(raw, mech, direct_tls):
    """A SCRAM client computes tls-server-end-point from the certificate it saw."""
    import base64
    import re

    from services.xmpp.sasl import tls_server_end_point

    from ..xmpp.test_sasl import ScramClient

    r = await raw(tls=direct_tls)
    if not direct_tls:
        await r.starttls()
    r.header()
    await r.expect(b"</stream:features>")
    der = r.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    plus = mech.endswith("-PLUS")
    client = ScramClient(
        mech,
        "alice",
        PASSWORD,
        cbind="p=tls-server-end-point" if plus else "y",
        cb_data=tls_server_end_point(der) if plus else b"",
    )
    first = base64.b64encode(client.first()).decode()
    r.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{first}</auth>")
    out = await r.expect(b"</challenge>|</failure>")
    if not plus:
        # 'y' says "I could bind but you did not offer it": a downgrade, refused
        assert b"<not-authorized/>" in out
        return
    challenge = base64.b64decode(re.search(rb">([^<]+)</challenge>", out).group(1))
    final = base64.b64encode(client.final(challenge)).decode()
    r.send(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{final}</response>")
    out = await r.expect(rb"</success>|/>")
    data = base64.b64decode(re.search(rb">([^<]*)</success>", out).group(1))
    assert client.verify(data)


async def test_plus_with_wrong_binding_data_fails(raw):
    import base64

    from ..xmpp.test_sasl import ScramClient

    r = await raw()
    await r.starttls()
    r.header()
    await r.expect(b"</stream:features>")
    client = ScramClient(
        "SCRAM-SHA-256-PLUS", "alice", PASSWORD, cbind="p=tls-server-end-point", cb_data=b"\0" * 32
    )
    first = base64.b64encode(client.first()).decode()
    r.send(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256-PLUS'>{first}</auth>"
    )
    out = await r.expect(b"</challenge>")
    import re

    challenge = base64.b64decode(re.search(rb">([^<]+)</challenge>", out).group(1))
    r.send(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        + base64.b64encode(client.final(challenge)).decode()
        + "</response>"
    )
    await r.expect(b"<not-authorized/>")
