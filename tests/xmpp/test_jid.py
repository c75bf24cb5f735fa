from __future__ import annotations

import pytest

from services.xmpp.errors import StanzaCondition, StanzaError
from services.xmpp.jid import JID


@pytest.mark.parametrize(
    ("raw", "local", "domain", "resource"),
    [
        ("juliet@example.com", "juliet", "example.com", None),
        ("Juliet@EXAMPLE.com/Balcony", "juliet", "example.com", "Balcony"),
        ("example.com", None, "example.com", None),
        ("example.com/res", None, "example.com", "res"),
        ("a@b/c/d@e", "a", "b", "c/d@e"),
        ("example.com.", None, "example.com", None),
        ("ÜBER@example.com", "über", "example.com", None),
        ("x@[::1]", "x", "[::1]", None),
    ],
)
def test_valid(raw, local, domain, resource):
    j = JID.parse(raw)
    assert (j.local, j.domain, j.resource) == (local, domain, resource)
    assert JID.parse(str(j)) == j


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "@example.com",
        "a@",
        "a@b/",
        "a b@c",
        'a"b@c',
        "a@b@c",
        "a@" + "x" * 64 + ".com",
        "a@exa mple.com",
        "x" * 1024 + "@a",
        "a@b/" + "r" * 1024,
        "a@b/\u0000",
        "\u0018",
        "a@ex\u0001ample.com",
        "a@example.com\u007f",
    ],
)
def test_invalid_is_jid_malformed(raw):
    with pytest.raises(StanzaError) as exc:
        JID.parse(raw)
    assert exc.value.condition is StanzaCondition.JID_MALFORMED


def test_bare_and_with_resource():
    j = JID.parse("a@b/c")
    assert j.bare == JID.parse("a@b") and j.bare.is_bare and not j.is_bare
    assert j.bare.with_resource("d") == JID.parse("a@b/d")
