"""Sans-IO SASL server mechanisms: SCRAM-SHA-1/256 (with -PLUS) and PLAIN.

Implements the server side of RFC 5802 (SCRAM), RFC 7677 (SCRAM-SHA-256),
RFC 5929 (``tls-server-end-point`` channel binding) and RFC 4616 (PLAIN) as
used by RFC 6120 section 6. Nothing here touches a socket, an event loop or
the database: the caller feeds decoded ``<auth/>``/``<response/>`` payloads in
and sends the returned bytes out; every failure is a :class:`SaslFailure`
carrying the RFC 6120 section 6.5 condition to put on the wire.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from precis_i18n import get_profile

from .errors import SaslCondition, SaslFailure


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """What the server keeps per account and hash: never the password."""

    hash_name: str  # "SHA-1" or "SHA-256"
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


__all__ = [
    "HASH_OF",
    "MECHANISMS",
    "ScramServer",
    "derive_credentials",
    "parse_plain",
    "saslprep",
    "tls_server_end_point",
    "verify_password",
]

#: Mechanisms this module implements, in order of preference.
MECHANISMS: tuple[str, ...] = (
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "PLAIN",
)

#: The credential hash each SCRAM mechanism uses.
HASH_OF: dict[str, str] = {
    "SCRAM-SHA-256-PLUS": "SHA-256",
    "SCRAM-SHA-256": "SHA-256",
    "SCRAM-SHA-1-PLUS": "SHA-1",
    "SCRAM-SHA-1": "SHA-1",
}

#: SCRAM hash name -> hashlib name.
_HASHLIB: dict[str, str] = {"SHA-1": "sha1", "SHA-256": "sha256"}

#: RFC 7677 section 4: the iteration count is at least 4096.
MIN_ITERATIONS = 4096

_CB_TYPE = "tls-server-end-point"
_OPAQUE = get_profile("OpaqueString")

#: Key for the fake salts handed out for unknown users; per process unless the
#: caller passes a shared one (a cluster should, so all nodes answer alike).
_FAKE_SALT_KEY = secrets.token_bytes(32)


def _fail(condition: SaslCondition, text: str) -> SaslFailure:
    return SaslFailure(condition, text)


def _malformed(text: str) -> SaslFailure:
    return SaslFailure(SaslCondition.MALFORMED_REQUEST, text)


def _not_authorized(text: str) -> SaslFailure:
    return SaslFailure(SaslCondition.NOT_AUTHORIZED, text)


def saslprep(password: str) -> str:
    """Prepare a password (or SCRAM username) with RFC 8265 OpaqueString."""
    try:
        out: str = _OPAQUE.enforce(password)
    except (UnicodeError, ValueError):
        raise _malformed("string is not a valid PRECIS OpaqueString") from None
    return out


def _hashlib_name(hash_name: str) -> str:
    try:
        return _HASHLIB[hash_name]
    except KeyError:
        raise ValueError(f"unsupported SCRAM hash {hash_name!r}") from None


def _salted_password(prepared: str, hash_name: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(_hashlib_name(hash_name), prepared.encode(), salt, iterations)


def _hmac(hash_name: str, key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, _hashlib_name(hash_name)).digest()


def _h(hash_name: str, data: bytes) -> bytes:
    return hashlib.new(_hashlib_name(hash_name), data).digest()


def derive_credentials(
    password: str, hash_name: str, salt: bytes | None = None, iterations: int = MIN_ITERATIONS
) -> ScramCredentials:
    """Compute what the server stores for ``password`` (RFC 5802 section 3).

    The password is prepared with :func:`saslprep` first (``SaslFailure``
    malformed-request if it cannot be). An unknown ``hash_name`` or an
    iteration count below 4096 is a programming error: ``ValueError``.
    """
    _hashlib_name(hash_name)
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"iteration count must be at least {MIN_ITERATIONS}")
    if salt is None:
        salt = secrets.token_bytes(16)
    if not salt:
        raise ValueError("salt must not be empty")
    salted = _salted_password(saslprep(password), hash_name, salt, iterations)
    client_key = _hmac(hash_name, salted, b"Client Key")
    return ScramCredentials(
        hash_name=hash_name,
        salt=salt,
        iterations=iterations,
        stored_key=_h(hash_name, client_key),
        server_key=_hmac(hash_name, salted, b"Server Key"),
    )


def verify_password(password: str, creds: ScramCredentials) -> bool:
    """Check a plaintext password (PLAIN) against stored SCRAM credentials.

    A password that is not a valid OpaqueString never matches.
    """
    try:
        prepared = saslprep(password)
    except SaslFailure:
        return False
    salted = _salted_password(prepared, creds.hash_name, creds.salt, creds.iterations)
    stored_key = _h(creds.hash_name, _hmac(creds.hash_name, salted, b"Client Key"))
    return hmac.compare_digest(stored_key, creds.stored_key)


@functools.cache
def _decoy_credentials(hash_name: str) -> ScramCredentials:
    return derive_credentials(secrets.token_urlsafe(24), hash_name)


def verify_password_or_decoy(password: str, creds: ScramCredentials | None) -> bool:
    """:func:`verify_password`, costing the same when there is no account:
    an unknown user is checked against decoy credentials that never match,
    so the time of a PLAIN failure does not tell which accounts exist."""
    if creds is None:
        verify_password(password, _decoy_credentials("SHA-256"))
        return False
    return verify_password(password, creds)


def tls_server_end_point(cert_der: bytes) -> bytes:
    """RFC 5929 section 4.1 channel-binding data for the server certificate.

    The certificate is hashed with the hash of its signature algorithm, except
    that MD5 and SHA-1 are replaced by SHA-256. Signature algorithms without a
    single hash (Ed25519, Ed448) also use SHA-256. ``ValueError`` if
    ``cert_der`` is not a DER certificate.
    """
    cert = x509.load_der_x509_certificate(cert_der)
    algorithm: hashes.HashAlgorithm | None
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if algorithm is None or isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert_der)
    return digest.finalize()


def _decode_utf8(message: bytes) -> str:
    try:
        return message.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("message is not valid UTF-8") from None


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeError, binascii.Error):
        raise _fail(SaslCondition.INCORRECT_ENCODING, "invalid base64") from None


def _unescape_saslname(value: str) -> str:
    """Decode RFC 5802 ``saslname``: ``=2C`` is ',' and ``=3D`` is '='."""
    if not value:
        raise _malformed("empty name")
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "=":
            esc = value[i + 1 : i + 3]
            if esc == "2C":
                out.append(",")
            elif esc == "3D":
                out.append("=")
            else:
                raise _malformed("bad '=' escape in name")
            i += 3
            continue
        if c == "\x00":
            raise _malformed("NUL in name")
        out.append(c)
        i += 1
    return "".join(out)


def _valid_nonce(nonce: str) -> bool:
    # RFC 5802: printable = %x21-2B / %x2D-7E (ASCII graphic characters except ',')
    return bool(nonce) and all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce)


def _check_extensions(parts: list[str]) -> None:
    for part in parts:
        if len(part) < 2 or part[1] != "=" or not part[0].isascii() or not part[0].isalpha():
            raise _malformed("malformed attribute")


class _State(enum.Enum):
    INITIAL = enum.auto()
    STARTED = enum.auto()
    CHALLENGED = enum.auto()
    DONE = enum.auto()
    FAILED = enum.auto()


class ScramServer:
    """One SCRAM exchange. Flow: start(client_first) -> username; then
    challenge(creds_or_None) -> server_first bytes; then finish(client_final)
    -> server_final bytes (the 'v=...' success data).

    ``cb_data`` is the ``tls-server-end-point`` data of this connection (None
    without TLS); ``plus_advertised`` says whether -PLUS mechanisms were
    offered (for the 'y' downgrade check). ``nonce`` is the server's part of
    the nonce, appended to the client's (random if None; for test vectors).
    ``fake_salt_key`` keys the fake salts for unknown users; a cluster should
    pass the same key on every node. Any failure ends the exchange; a step
    called out of order fails with malformed-request.
    """

    username: str
    authzid: str | None

    def __init__(
        self,
        mechanism: str,
        cb_data: bytes | None,
        plus_advertised: bool,
        nonce: str | None = None,
        *,
        fake_salt_key: bytes | None = None,
    ) -> None:
        if mechanism not in HASH_OF:
            raise _fail(SaslCondition.INVALID_MECHANISM, f"{mechanism} is not a SCRAM mechanism")
        self.mechanism = mechanism
        self.hash_name = HASH_OF[mechanism]
        self.plus = mechanism.endswith("-PLUS")
        if self.plus and cb_data is None:
            raise _fail(SaslCondition.INVALID_MECHANISM, "channel binding needs TLS")
        if nonce is None:
            nonce = secrets.token_urlsafe(24)
        elif not _valid_nonce(nonce):
            raise ValueError("server nonce must be printable ASCII without ','")
        self._cb_data = cb_data
        self._plus_advertised = plus_advertised
        self._server_nonce_part = nonce
        self._fake_salt_key = _FAKE_SALT_KEY if fake_salt_key is None else fake_salt_key
        self._state = _State.INITIAL
        self.username = ""
        self.authzid = None
        self._gs2_header = b""
        self._client_first_bare = ""
        self._nonce = ""
        self._server_first = ""
        self._creds: ScramCredentials | None = None
        self._known_user = False

    @property
    def completed(self) -> bool:
        """True once :meth:`finish` has verified the client's proof."""
        return self._state is _State.DONE

    def _enter(self, expected: _State) -> None:
        if self._state is not expected:
            self._state = _State.FAILED
            raise _malformed("SCRAM step out of order")

    # -- step 1 ------------------------------------------------------------

    def start(self, client_first: bytes) -> str:
        """Parse client-first-message; return the prepared username (authcid)."""
        self._enter(_State.INITIAL)
        try:
            username = self._start(client_first)
        except BaseException:
            self._state = _State.FAILED
            raise
        self._state = _State.STARTED
        return username

    def _start(self, client_first: bytes) -> str:
        text = _decode_utf8(client_first)
        parts = text.split(",")
        if len(parts) < 4:
            raise _malformed("client-first-message too short")
        cbind, authz = parts[0], parts[1]
        self._check_cbind_flag(cbind)
        if authz:
            if not authz.startswith("a="):
                raise _malformed("bad authzid field")
            self.authzid = _unescape_saslname(authz[2:])
        self._gs2_header = f"{cbind},{authz},".encode()

        bare = parts[2:]
        if bare[0].startswith("m="):
            raise _malformed("mandatory extensions are not supported")
        if not bare[0].startswith("n="):
            raise _malformed("missing username")
        if not bare[1].startswith("r="):
            raise _malformed("missing nonce")
        client_nonce = bare[1][2:]
        if not _valid_nonce(client_nonce):
            raise _malformed("bad client nonce")
        _check_extensions(bare[2:])
        self.username = saslprep(_unescape_saslname(bare[0][2:]))
        self._client_first_bare = ",".join(bare)
        self._nonce = client_nonce + self._server_nonce_part
        return self.username

    def _check_cbind_flag(self, cbind: str) -> None:
        if cbind == "n":
            if self.plus:
                raise _not_authorized("-PLUS mechanism without channel binding")
        elif cbind == "y":
            if self.plus:
                raise _not_authorized("-PLUS mechanism without channel binding")
            if self._plus_advertised:
                raise _not_authorized("channel binding downgrade detected")
        elif cbind.startswith("p="):
            if not self.plus:
                raise _not_authorized("channel binding requested with a non-PLUS mechanism")
            if cbind[2:] != _CB_TYPE:
                raise _not_authorized(f"unsupported channel binding type {cbind[2:]!r}")
        else:
            raise _malformed("bad gs2 channel binding flag")

    # -- step 2 ------------------------------------------------------------

    def challenge(self, creds: ScramCredentials | None) -> bytes:
        """Return server-first-message for ``creds`` (None: unknown user).

        An unknown user still gets a plausible challenge with a salt that is
        stable per username, so usernames cannot be enumerated; :meth:`finish`
        then fails with not-authorized.
        """
        self._enter(_State.STARTED)
        try:
            if creds is None:
                creds = self._fake_credentials()
                self._known_user = False
            else:
                if creds.hash_name != self.hash_name:
                    raise _fail(
                        SaslCondition.TEMPORARY_AUTH_FAILURE,
                        f"credentials are {creds.hash_name}, mechanism needs {self.hash_name}",
                    )
                if creds.iterations < MIN_ITERATIONS or not creds.salt:
                    raise _fail(
                        SaslCondition.TEMPORARY_AUTH_FAILURE, "stored credentials are too weak"
                    )
                self._known_user = True
        except BaseException:
            self._state = _State.FAILED
            raise
        self._creds = creds
        salt = base64.b64encode(creds.salt).decode("ascii")
        self._server_first = f"r={self._nonce},s={salt},i={creds.iterations}"
        self._state = _State.CHALLENGED
        return self._server_first.encode()

    def _fake_credentials(self) -> ScramCredentials:
        size = hashlib.new(_hashlib_name(self.hash_name)).digest_size
        msg = f"{self.hash_name}\x00{self.username}".encode()
        salt = hmac.new(self._fake_salt_key, msg, "sha256").digest()[:16]
        return ScramCredentials(
            hash_name=self.hash_name,
            salt=salt,
            iterations=MIN_ITERATIONS,
            stored_key=secrets.token_bytes(size),
            server_key=secrets.token_bytes(size),
        )

    # -- step 3 ------------------------------------------------------------

    def finish(self, client_final: bytes) -> bytes:
        """Verify client-final-message; return server-final-message ('v=...')."""
        self._enter(_State.CHALLENGED)
        try:
            result = self._finish(client_final)
        except BaseException:
            self._state = _State.FAILED
            raise
        self._state = _State.DONE
        return result

    def _finish(self, client_final: bytes) -> bytes:
        assert self._creds is not None
        creds = self._creds
        text = _decode_utf8(client_final)
        parts = text.split(",")
        if len(parts) < 3:
            raise _malformed("client-final-message too short")
        if not parts[0].startswith("c="):
            raise _malformed("missing channel binding")
        if not parts[1].startswith("r="):
            raise _malformed("missing nonce")
        if not parts[-1].startswith("p="):
            raise _malformed("missing proof")
        _check_extensions(parts[2:-1])

        cb_input = _b64decode(parts[0][2:])
        proof = _b64decode(parts[-1][2:])
        expected_cb = self._gs2_header
        if self.plus:
            assert self._cb_data is not None
            expected_cb += self._cb_data
        if not hmac.compare_digest(cb_input, expected_cb):
            raise _not_authorized("channel binding data does not match")
        if parts[1][2:] != self._nonce:
            raise _not_authorized("nonce does not match")

        without_proof = text[: text.rindex(",")]
        auth_message = ",".join((self._client_first_bare, self._server_first, without_proof))
        auth_bytes = auth_message.encode()
        client_signature = _hmac(self.hash_name, creds.stored_key, auth_bytes)
        if len(proof) != len(client_signature):
            raise _not_authorized("wrong proof")
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        ok = hmac.compare_digest(_h(self.hash_name, client_key), creds.stored_key)
        if not (ok and self._known_user):
            raise _not_authorized("wrong proof")
        server_signature = _hmac(self.hash_name, creds.server_key, auth_bytes)
        return b"v=" + base64.b64encode(server_signature)


def parse_plain(message: bytes) -> tuple[str | None, str, str]:
    """Split a PLAIN message (RFC 4616) into (authzid or None, authcid, password).

    The authcid and password are prepared with :func:`saslprep`; anything
    malformed fails with malformed-request.
    """
    text = _decode_utf8(message)
    parts = text.split("\x00")
    if len(parts) != 3:
        raise _malformed("PLAIN message needs exactly two NUL separators")
    authzid, authcid, password = parts
    if not authcid or not password:
        raise _malformed("empty authcid or password")
    return (authzid or None), saslprep(authcid), saslprep(password)
