"""Tests for services.xmpp.sasl against an independent minimal SCRAM client."""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from services.core.storage import ScramCredentials
from services.xmpp.errors import SaslCondition, SaslFailure
from services.xmpp.sasl import (
    HASH_OF,
    MECHANISMS,
    ScramServer,
    derive_credentials,
    parse_plain,
    saslprep,
    tls_server_end_point,
    verify_password,
)

# --------------------------------------------------------------------------
# an independent minimal SCRAM client (RFC 5802 section 3)
# --------------------------------------------------------------------------


def _escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    def __init__(
        self,
        mechanism: str,
        username: str,
        password: str,
        *,
        cbind: str = "n",
        cb_data: bytes = b"",
        authzid: str | None = None,
        nonce: str | None = None,
    ) -> None:
        self.hash = {"SHA-1": "sha1", "SHA-256": "sha256"}[HASH_OF[mechanism]]
        self.username = username
        self.password = password
        authz = "a=" + _escape(authzid) if authzid is not None else ""
        self.gs2_header = f"{cbind},{authz},".encode()
        self.cb_data = cb_data
        self.nonce = nonce if nonce is not None else secrets.token_hex(12)
        self.bare = f"n={_escape(username)},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return self.gs2_header + self.bare.encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(part.split("=", 1) for part in text.split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        assert nonce.startswith(self.nonce) and len(nonce) > len(self.nonce)
        assert iterations >= 4096
        salted = hashlib.pbkdf2_hmac(self.hash, self.password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", self.hash).digest()
        stored_key = hashlib.new(self.hash, client_key).digest()
        channel = base64.b64encode(self.gs2_header + self.cb_data).decode()
        without_proof = f"c={channel},r={nonce}"
        auth_message = f"{self.bare},{text},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, self.hash).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", self.hash).digest()
        self.server_signature = hmac.new(server_key, auth_message, self.hash).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        return server_final == b"v=" + base64.b64encode(self.server_signature)


SCRAM = [m for m in MECHANISMS if m.startswith("SCRAM")]
NON_PLUS = [m for m in SCRAM if not m.endswith("-PLUS")]
PLUS = [m for m in SCRAM if m.endswith("-PLUS")]
CB = b"\x01" * 32  # stand-in tls-server-end-point data


def _creds(mechanism: str, password: str = "pencil") -> ScramCredentials:
    return derive_credentials(password, HASH_OF[mechanism])


def _exchange(
    server: ScramServer,
    client: ScramClient,
    creds: ScramCredentials | None,
) -> bytes:
    username = server.start(client.first())
    assert username == client.username
    server_first = server.challenge(creds)
    return server.finish(client.final(server_first))


def _fails(condition: SaslCondition, fn: Callable[[], object]) -> SaslFailure:
    with pytest.raises(SaslFailure) as info:
        fn()
    assert info.value.condition is condition, info.value.text
    return info.value


# --------------------------------------------------------------------------
# constants
# --------------------------------------------------------------------------


def test_mechanisms_and_hashes() -> None:
    assert MECHANISMS == (
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    )
    assert HASH_OF == {
        "SCRAM-SHA-256-PLUS": "SHA-256",
        "SCRAM-SHA-256": "SHA-256",
        "SCRAM-SHA-1-PLUS": "SHA-1",
        "SCRAM-SHA-1": "SHA-1",
    }


# --------------------------------------------------------------------------
# published test vectors
# --------------------------------------------------------------------------


def test_rfc5802_scram_sha1_vector() -> None:
    creds = derive_credentials("pencil", "SHA-1", salt=base64.b64decode("QSXCR+Q6sek8bf92"))
    server = ScramServer("SCRAM-SHA-1", None, False, nonce="3rfcNHYJY1ZVvWVs7j")
    assert server.start(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL") == "user"
    assert server.authzid is None
    assert server.challenge(creds) == (
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    )
    client_final = (
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    )
    assert server.finish(client_final) == b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="
    assert server.completed


def test_rfc5802_vector_with_independent_client() -> None:
    creds = derive_credentials("pencil", "SHA-1", salt=base64.b64decode("QSXCR+Q6sek8bf92"))
    server = ScramServer("SCRAM-SHA-1", None, False, nonce="3rfcNHYJY1ZVvWVs7j")
    client = ScramClient("SCRAM-SHA-1", "user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
    server.start(client.first())
    final = client.final(server.challenge(creds))
    assert final.endswith(b",p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
    server_final = server.finish(final)
    assert server_final == b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="
    assert client.verify(server_final)


def test_rfc7677_scram_sha256_vector() -> None:
    creds = derive_credentials(
        "pencil", "SHA-256", salt=base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    )
    server = ScramServer("SCRAM-SHA-256", None, False, nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    assert server.start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == "user"
    assert server.challenge(creds) == (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    client_final = (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert server.finish(client_final) == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


# --------------------------------------------------------------------------
# full exchanges
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", NON_PLUS)
def test_full_exchange(mechanism: str) -> None:
    server = ScramServer(mechanism, None, False)
    client = ScramClient(mechanism, "juliet", "r0m30myr0m30")
    server_final = _exchange(server, client, _creds(mechanism, "r0m30myr0m30"))
    assert client.verify(server_final)
    assert server.username == "juliet"
    assert server.completed


@pytest.mark.parametrize("mechanism", NON_PLUS)
def test_full_exchange_over_tls_without_plus(mechanism: str) -> None:
    # TLS present but -PLUS not advertised: 'y' is fine, cb_data is ignored
    server = ScramServer(mechanism, CB, False)
    client = ScramClient(mechanism, "juliet", "pencil", cbind="y")
    assert client.verify(_exchange(server, client, _creds(mechanism)))


@pytest.mark.parametrize("mechanism", NON_PLUS)
def test_non_plus_n_flag_allowed_when_plus_advertised(mechanism: str) -> None:
    server = ScramServer(mechanism, CB, True)
    client = ScramClient(mechanism, "juliet", "pencil", cbind="n")
    assert client.verify(_exchange(server, client, _creds(mechanism)))


@pytest.mark.parametrize("mechanism", PLUS)
def test_full_exchange_plus(mechanism: str) -> None:
    server = ScramServer(mechanism, CB, True)
    client = ScramClient(mechanism, "juliet", "pencil", cbind="p=tls-server-end-point", cb_data=CB)
    assert client.verify(_exchange(server, client, _creds(mechanism)))
    assert server.completed


@pytest.mark.parametrize("mechanism", PLUS)
def test_full_exchange_plus_with_authzid_and_real_certificate(mechanism: str) -> None:
    cb = tls_server_end_point(_cert_der(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))
    server = ScramServer(mechanism, cb, True)
    client = ScramClient(
        mechanism,
        "juliet",
        "pencil",
        cbind="p=tls-server-end-point",
        cb_data=cb,
        authzid="juliet@example.com",
    )
    assert client.verify(_exchange(server, client, _creds(mechanism)))
    assert server.authzid == "juliet@example.com"


def test_username_and_authzid_escapes_are_decoded() -> None:
    mechanism = "SCRAM-SHA-256"
    server = ScramServer(mechanism, None, False)
    client = ScramClient(mechanism, "a,b=c", "pencil", authzid="x=,y")
    assert b"n=a=2Cb=3Dc," in client.first()
    assert client.first().startswith(b"n,a=x=3D=2Cy,")
    assert client.verify(_exchange(server, client, _creds(mechanism)))
    assert server.username == "a,b=c"
    assert server.authzid == "x=,y"


def test_username_is_saslprepped() -> None:
    server = ScramServer("SCRAM-SHA-1", None, False)
    assert server.start("n,,n=ju\u00a0liet,r=abc".encode()) == "ju liet"


def test_extensions_after_nonce_are_ignored() -> None:
    mechanism = "SCRAM-SHA-1"
    server = ScramServer(mechanism, None, False)
    client = ScramClient(mechanism, "user", "pencil")
    server.start(client.first() + b",x=whatever")
    client.bare += ",x=whatever"  # the extension is part of the AuthMessage
    assert client.verify(server.finish(client.final(server.challenge(_creds(mechanism)))))


def test_server_nonce_extends_client_nonce() -> None:
    server = ScramServer("SCRAM-SHA-256", None, False)
    server.start(b"n,,n=user,r=clientnonce")
    first = server.challenge(_creds("SCRAM-SHA-256")).decode()
    nonce = first.split(",")[0][2:]
    assert nonce.startswith("clientnonce") and len(nonce) > len("clientnonce") + 16


def test_default_server_nonces_differ() -> None:
    nonces = set()
    for _ in range(3):
        server = ScramServer("SCRAM-SHA-1", None, False)
        server.start(b"n,,n=user,r=abc")
        nonces.add(server.challenge(_creds("SCRAM-SHA-1")).split(b",")[0])
    assert len(nonces) == 3


# --------------------------------------------------------------------------
# failures: construction, gs2 header and channel binding
# --------------------------------------------------------------------------


def test_unknown_mechanism() -> None:
    _fails(SaslCondition.INVALID_MECHANISM, lambda: ScramServer("PLAIN", None, False))
    _fails(SaslCondition.INVALID_MECHANISM, lambda: ScramServer("SCRAM-MD5", None, False))


@pytest.mark.parametrize("mechanism", PLUS)
def test_plus_without_tls(mechanism: str) -> None:
    _fails(SaslCondition.INVALID_MECHANISM, lambda: ScramServer(mechanism, None, True))


def test_bad_server_nonce_argument() -> None:
    with pytest.raises(ValueError):
        ScramServer("SCRAM-SHA-1", None, False, nonce="a,b")
    with pytest.raises(ValueError):
        ScramServer("SCRAM-SHA-1", None, False, nonce="")


@pytest.mark.parametrize("mechanism", PLUS)
@pytest.mark.parametrize("flag", ["n", "y"])
def test_plus_requires_channel_binding(mechanism: str, flag: str) -> None:
    server = ScramServer(mechanism, CB, True)
    _fails(SaslCondition.NOT_AUTHORIZED, lambda: server.start(f"{flag},,n=user,r=abc".encode()))


@pytest.mark.parametrize("mechanism", PLUS)
@pytest.mark.parametrize("cb_type", ["tls-unique", "tls-exporter", ""])
def test_plus_unsupported_channel_binding_type(mechanism: str, cb_type: str) -> None:
    server = ScramServer(mechanism, CB, True)
    first = f"p={cb_type},,n=user,r=abc".encode()
    _fails(SaslCondition.NOT_AUTHORIZED, lambda: server.start(first))


@pytest.mark.parametrize("mechanism", NON_PLUS)
def test_non_plus_with_p_flag(mechanism: str) -> None:
    server = ScramServer(mechanism, CB, True)
    first = b"p=tls-server-end-point,,n=user,r=abc"
    _fails(SaslCondition.NOT_AUTHORIZED, lambda: server.start(first))


@pytest.mark.parametrize("mechanism", NON_PLUS)
def test_y_flag_downgrade_detected(mechanism: str) -> None:
    server = ScramServer(mechanism, CB, True)
    _fails(SaslCondition.NOT_AUTHORIZED, lambda: server.start(b"y,,n=user,r=abc"))


@pytest.mark.parametrize("flag", ["x", "", "N", "p"])
def test_bad_gs2_flag(flag: str) -> None:
    server = ScramServer("SCRAM-SHA-1", None, False)
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: server.start(f"{flag},,n=user,r=a".encode()))


@pytest.mark.parametrize("mechanism", PLUS)
def test_plus_wrong_channel_binding_data(mechanism: str) -> None:
    server = ScramServer(mechanism, CB, True)
    client = ScramClient(
        mechanism, "juliet", "pencil", cbind="p=tls-server-end-point", cb_data=b"\x02" * 32
    )
    server.start(client.first())
    final = client.final(server.challenge(_creds(mechanism)))
    _fails(SaslCondition.NOT_AUTHORIZED, lambda: server.finish(final))
    assert not server.completed


@pytest.mark.parametrize("mechanism", PLUS)
def test_plus_missing_channel_binding_data(mechanism: str) -> None:
    # the client echoes only the gs2 header, as if it had no TLS data
    server = ScramServer(mechanism, CB, True)
    client = ScramClient(mechanism, "juliet", "pencil", cbind="p=tls-server-end-point")
    server.start(client.first())
    final = client.final(server.challenge(_creds(mechanism)))
    _fails(SaslCondition.NOT_AUTHORIZED, lambda: server.finish(final))


def test_gs2_header_mismatch_in_client_final() -> None:
    server = ScramServer("SCRAM-SHA-1", None, False)
    client = ScramClient("SCRAM-SHA-1", "user", "pencil", cbind="n")
    server.start(client.first())
    client.gs2_header = b"y,,"  # c= now carries a different header than sent first
    final = client.final(server.challenge(_creds("SCRAM-SHA-1")))
    _fails(SaslCondition.NOT_AUTHORIZED, lambda: server.finish(final))


# --------------------------------------------------------------------------
# failures: client-first parsing
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        b"n,,m=ext,n=user,r=abc",  # mandatory extension
        b"n,,n=user",  # no nonce
        b"n,,r=abc,n=user",  # wrong order
        b"n,,n=user,r=",  # empty nonce
        b"n,,n=user,r=a\x7fb",  # nonce not printable
        b"n,,n=,r=abc",  # empty username
        b"n,,n=us=er,r=abc",  # bad escape
        b"n,,n=us=2cer,r=abc",  # escapes are upper case
        b"n,,n=user=,r=abc",  # truncated escape
        b"n,,n=user=3,r=abc",  # truncated escape
        b"n,,n=us\x00er,r=abc",  # NUL
        b"n,,n=us\x07er,r=abc",  # not an OpaqueString
        b"n,a=,n=user,r=abc",  # empty authzid
        b"n,a=x=41,n=user,r=abc",  # bad authzid escape
        b"n,z=x,n=user,r=abc",  # not an authzid
        b"n,,n=user,r=abc,1=bad",  # malformed extension
        b"n,,n=user,r=abc,",  # empty extension
        b"n,,",  # truncated
        b"",
        b"n,,n=\xff\xfe,r=abc",  # invalid UTF-8
        b"n,,n=user,r=\xc3",  # truncated UTF-8
    ],
)
def test_malformed_client_first(first: bytes) -> None:
    server = ScramServer("SCRAM-SHA-256", None, False)
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: server.start(first))


# --------------------------------------------------------------------------
# failures: client-final and proof
# --------------------------------------------------------------------------


def _challenged(mechanism: str = "SCRAM-SHA-256") -> tuple[ScramServer, ScramClient, bytes]:
    server = ScramServer(mechanism, None, False)
    client = ScramClient(mechanism, "user", "pencil")
    server.start(client.first())
    return server, client, server.challenge(_creds(mechanism))


@pytest.mark.parametrize("mechanism", SCRAM)
def test_wrong_password(mechanism: str) -> None:
    cbind = "p=tls-server-end-point" if mechanism.endswith("-PLUS") else "n"
    server = ScramServer(mechanism, CB, mechanism.endswith("-PLUS"))
    client = ScramClient(
        mechanism, "user", "wrong", cbind=cbind, cb_data=CB if cbind != "n" else b""
    )
    server.start(client.first())
    final = client.final(server.challenge(_creds(mechanism, "pencil")))
    _fails(SaslCondition.NOT_AUTHORIZED, lambda: server.finish(final))


def test_nonce_mismatch() -> None:
    server, client, server_first = _challenged()
    final = client.final(server_first)
    nonce = server_first.split(b",")[0][2:]
    tampered = final.replace(nonce, nonce[:-1] + (b"A" if nonce[-1:] != b"A" else b"B"))
    _fails(SaslCondition.NOT_AUTHORIZED, lambda: server.finish(tampered))


def test_nonce_must_be_the_combined_nonce() -> None:
    server, client, _ = _challenged()
    final = f"c=biws,r={client.nonce},p=AAAA".encode()  # the client nonce alone
    _fails(SaslCondition.NOT_AUTHORIZED, lambda: server.finish(final))


@pytest.mark.parametrize("part", ["c", "p"])
def test_bad_base64(part: str) -> None:
    server, client, server_first = _challenged()
    attrs = client.final(server_first).decode().split(",")
    index = 0 if part == "c" else -1
    attrs[index] = f"{part}=b*ws"
    _fails(SaslCondition.INCORRECT_ENCODING, lambda: server.finish(",".join(attrs).encode()))


def test_bad_base64_padding() -> None:
    server, client, server_first = _challenged()
    final = client.final(server_first).decode()
    _fails(SaslCondition.INCORRECT_ENCODING, lambda: server.finish(final[:-1].encode()))


def test_proof_of_wrong_length() -> None:
    server, client, server_first = _challenged()
    final = client.final(server_first).decode()
    final = final[: final.rindex("p=")] + "p=" + base64.b64encode(b"\x00" * 20).decode()
    _fails(SaslCondition.NOT_AUTHORIZED, lambda: server.finish(final.encode()))


@pytest.mark.parametrize(
    "make",
    [
        lambda f: f.replace(b"c=", b"x=", 1),  # no channel binding
        lambda f: f[f.index(b",") + 1 :],  # channel binding dropped
        lambda f: f[: f.rindex(b",")],  # proof dropped
        lambda f: f.replace(b",r=", b",s=", 1),  # no nonce
        lambda f: f + b",x=1",  # proof not last
        lambda f: f.replace(b",p=", b",1=2,p=", 1),  # malformed extension
        lambda f: b"\xff" + f,  # invalid UTF-8
        lambda f: b"",
    ],
)
def test_malformed_client_final(make: Callable[[bytes], bytes]) -> None:
    server, client, server_first = _challenged()
    final = make(client.final(server_first))
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: server.finish(final))


# --------------------------------------------------------------------------
# state machine
# --------------------------------------------------------------------------


def test_challenge_before_start() -> None:
    server = ScramServer("SCRAM-SHA-1", None, False)
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: server.challenge(_creds("SCRAM-SHA-1")))


def test_finish_before_challenge() -> None:
    server = ScramServer("SCRAM-SHA-1", None, False)
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: server.finish(b"c=biws,r=abc,p=AAAA"))
    server = ScramServer("SCRAM-SHA-1", None, False)
    server.start(b"n,,n=user,r=abc")
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: server.finish(b"c=biws,r=abc,p=AAAA"))


def test_start_twice() -> None:
    server = ScramServer("SCRAM-SHA-1", None, False)
    server.start(b"n,,n=user,r=abc")
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: server.start(b"n,,n=user,r=abc"))
    # and the exchange is dead afterwards
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: server.challenge(_creds("SCRAM-SHA-1")))


def test_challenge_twice_and_finish_twice() -> None:
    server, client, server_first = _challenged()
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: server.challenge(_creds("SCRAM-SHA-256")))

    server, client, server_first = _challenged()
    final = client.final(server_first)
    assert client.verify(server.finish(final))
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: server.finish(final))
    assert not server.completed


def test_no_retry_after_failure() -> None:
    server, client, server_first = _challenged()
    good = client.final(server_first)
    bad = good[: good.rindex(b"p=")] + b"p=" + base64.b64encode(b"\x00" * 32)
    _fails(SaslCondition.NOT_AUTHORIZED, lambda: server.finish(bad))
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: server.finish(good))


def test_failed_start_ends_the_exchange() -> None:
    server = ScramServer("SCRAM-SHA-1", None, False)
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: server.start(b"n,,n=user"))
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: server.start(b"n,,n=user,r=abc"))


# --------------------------------------------------------------------------
# credentials handed to challenge()
# --------------------------------------------------------------------------


def test_credentials_for_the_wrong_hash() -> None:
    server = ScramServer("SCRAM-SHA-256", None, False)
    server.start(b"n,,n=user,r=abc")
    creds = derive_credentials("pencil", "SHA-1")
    _fails(SaslCondition.TEMPORARY_AUTH_FAILURE, lambda: server.challenge(creds))


def test_stored_iteration_count_below_minimum() -> None:
    good = derive_credentials("pencil", "SHA-1")
    weak = ScramCredentials("SHA-1", good.salt, 1000, good.stored_key, good.server_key)
    server = ScramServer("SCRAM-SHA-1", None, False)
    server.start(b"n,,n=user,r=abc")
    _fails(SaslCondition.TEMPORARY_AUTH_FAILURE, lambda: server.challenge(weak))


def test_higher_iteration_count() -> None:
    mechanism = "SCRAM-SHA-256"
    creds = derive_credentials("pencil", "SHA-256", iterations=5000)
    server = ScramServer(mechanism, None, False)
    client = ScramClient(mechanism, "user", "pencil")
    server.start(client.first())
    first = server.challenge(creds)
    assert first.endswith(b",i=5000")
    assert client.verify(server.finish(client.final(first)))


# --------------------------------------------------------------------------
# unknown users
# --------------------------------------------------------------------------


def _fake_first(username: str, mechanism: str = "SCRAM-SHA-256", **kw: bytes) -> bytes:
    server = ScramServer(mechanism, None, False, nonce="srv", **kw)
    server.start(f"n,,n={username},r=cli".encode())
    return server.challenge(None)


def test_unknown_user_gets_plausible_challenge() -> None:
    first = _fake_first("nobody").decode()
    r, s, i = first.split(",")
    assert r == "r=clisrv"
    assert len(base64.b64decode(s[2:], validate=True)) == 16
    assert i == "i=4096"


def test_unknown_user_salt_is_deterministic_per_username() -> None:
    assert _fake_first("nobody") == _fake_first("nobody")
    assert _fake_first("nobody") != _fake_first("somebody")
    assert _fake_first("nobody", "SCRAM-SHA-1") != _fake_first("nobody", "SCRAM-SHA-256")


def test_unknown_user_salt_shared_key() -> None:
    key = b"k" * 32
    a = _fake_first("nobody", fake_salt_key=key)
    assert a == _fake_first("nobody", fake_salt_key=key)
    assert a != _fake_first("nobody", fake_salt_key=b"j" * 32)


@pytest.mark.parametrize("mechanism", SCRAM)
def test_unknown_user_fails_not_authorized(mechanism: str) -> None:
    plus = mechanism.endswith("-PLUS")
    server = ScramServer(mechanism, CB, plus)
    client = ScramClient(
        mechanism,
        "nobody",
        "pencil",
        cbind="p=tls-server-end-point" if plus else "n",
        cb_data=CB if plus else b"",
    )
    assert server.start(client.first()) == "nobody"
    final = client.final(server.challenge(None))
    _fails(SaslCondition.NOT_AUTHORIZED, lambda: server.finish(final))
    assert not server.completed


# --------------------------------------------------------------------------
# saslprep, derive_credentials, verify_password
# --------------------------------------------------------------------------


def test_saslprep() -> None:
    assert saslprep("pencil") == "pencil"
    assert saslprep("pen\u00a0cil") == "pen cil"  # non-ASCII space mapped
    assert saslprep("A\u030a") == "\u00c5"  # NFC
    assert saslprep("Pencil") == "Pencil"  # case preserved
    for bad in ["", "pen\x00cil", "pen\x07cil"]:
        _fails(SaslCondition.MALFORMED_REQUEST, functools.partial(saslprep, bad))


@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256"])
def test_derive_credentials(hash_name: str) -> None:
    a = derive_credentials("pencil", hash_name)
    b = derive_credentials("pencil", hash_name)
    assert a.hash_name == hash_name
    assert len(a.salt) == 16 and a.salt != b.salt
    assert a.iterations == 4096
    size = hashlib.new(hash_name.replace("-", "").lower()).digest_size
    assert len(a.stored_key) == size and len(a.server_key) == size
    assert a.stored_key != b.stored_key
    c = derive_credentials("pencil", hash_name, salt=a.salt)
    assert c == a


def test_derive_credentials_rfc5802_keys() -> None:
    salt = base64.b64decode("QSXCR+Q6sek8bf92")
    salted = hashlib.pbkdf2_hmac("sha1", b"pencil", salt, 4096)
    creds = derive_credentials("pencil", "SHA-1", salt=salt)
    client_key = hmac.new(salted, b"Client Key", "sha1").digest()
    assert creds.stored_key == hashlib.sha1(client_key).digest()
    assert creds.server_key == hmac.new(salted, b"Server Key", "sha1").digest()


def test_derive_credentials_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        derive_credentials("pencil", "MD5")
    with pytest.raises(ValueError):
        derive_credentials("pencil", "SHA-256", iterations=4095)
    with pytest.raises(ValueError):
        derive_credentials("pencil", "SHA-256", salt=b"")
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: derive_credentials("", "SHA-256"))


@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256"])
def test_verify_password(hash_name: str) -> None:
    creds = derive_credentials("pencil", hash_name)
    assert verify_password("pencil", creds)
    assert not verify_password("Pencil", creds)
    assert not verify_password("pencil ", creds)
    assert not verify_password("", creds)
    assert not verify_password("pen\x00cil", creds)


def test_verify_password_prepares_the_password() -> None:
    creds = derive_credentials("pen\u00a0cil", "SHA-256")
    assert verify_password("pen cil", creds)
    assert verify_password("pen\u2003cil", creds)


def test_verify_password_uses_constant_time_compare(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    creds = derive_credentials("pencil", "SHA-1")
    assert verify_password("pencil", creds)
    assert calls and calls[-1][1] == creds.stored_key


# --------------------------------------------------------------------------
# PLAIN
# --------------------------------------------------------------------------


def test_parse_plain() -> None:
    assert parse_plain(b"\x00juliet\x00pencil") == (None, "juliet", "pencil")
    assert parse_plain(b"romeo@example.com\x00juliet\x00pencil") == (
        "romeo@example.com",
        "juliet",
        "pencil",
    )
    assert parse_plain("\x00j\u00fcliet\x00pen\u00a0cil".encode()) == (
        None,
        "j\u00fcliet",
        "pen cil",
    )


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"juliet\x00pencil",
        b"\x00juliet",
        b"\x00juliet\x00pencil\x00",
        b"a\x00b\x00c\x00d",
        b"\x00\x00pencil",
        b"\x00juliet\x00",
        b"\x00jul\x07iet\x00pencil",
        b"\x00juliet\x00pen\x07cil",
        b"\x00juliet\x00\xff\xfe",
    ],
)
def test_parse_plain_malformed(message: bytes) -> None:
    _fails(SaslCondition.MALFORMED_REQUEST, lambda: parse_plain(message))


def test_plain_end_to_end() -> None:
    creds = derive_credentials("pencil", "SHA-256")
    _, authcid, password = parse_plain(b"\x00juliet\x00pencil")
    assert authcid == "juliet" and verify_password(password, creds)
    _, _, password = parse_plain(b"\x00juliet\x00wrong")
    assert not verify_password(password, creds)


# --------------------------------------------------------------------------
# tls-server-end-point
# --------------------------------------------------------------------------


_SignKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
_SignHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512


def _cert_der(key: _SignKey, algorithm: _SignHash | None) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, algorithm)
    )
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        (hashes.SHA256(), hashlib.sha256),
        (hashes.SHA384(), hashlib.sha384),
        (hashes.SHA512(), hashlib.sha512),
    ],
)
def test_tls_server_end_point_uses_signature_hash(
    algorithm: _SignHash, digest: Callable[[bytes], hashlib._Hash]
) -> None:
    der = _cert_der(ec.generate_private_key(ec.SECP384R1()), algorithm)
    assert tls_server_end_point(der) == digest(der).digest()


def test_tls_server_end_point_rsa(rsa_key: rsa.RSAPrivateKey) -> None:
    der = _cert_der(rsa_key, hashes.SHA384())
    assert tls_server_end_point(der) == hashlib.sha384(der).digest()


# sha256WithRSAEncryption, sha1WithRSAEncryption and md5WithRSAEncryption share
# their length and differ only in the last byte of the OID.
_SHA256_RSA_OID = bytes.fromhex("06092a864886f70d01010b")


@pytest.mark.parametrize("last", [0x05, 0x04], ids=["sha1", "md5"])
def test_tls_server_end_point_upgrades_weak_hashes(rsa_key: rsa.RSAPrivateKey, last: int) -> None:
    der = _cert_der(rsa_key, hashes.SHA256())
    assert der.count(_SHA256_RSA_OID) == 2
    weak = der.replace(_SHA256_RSA_OID, _SHA256_RSA_OID[:-1] + bytes([last]))
    cert = x509.load_der_x509_certificate(weak)
    expected = hashes.SHA1 if last == 0x05 else hashes.MD5
    assert isinstance(cert.signature_hash_algorithm, expected)
    assert tls_server_end_point(weak) == hashlib.sha256(weak).digest()


def test_tls_server_end_point_ed25519() -> None:
    der = _cert_der(ed25519.Ed25519PrivateKey.generate(), None)
    assert tls_server_end_point(der) == hashlib.sha256(der).digest()


def test_tls_server_end_point_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        tls_server_end_point(b"not a certificate")
