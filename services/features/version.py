"""Software version (XEP-0092) of the server.

The server answers with ``settings.server_name`` and the version of the
installed ``xmppd`` distribution (``0.1.0`` when running from a source tree
that is not installed). The optional ``<os/>`` is left out: it tells an
attacker more than it tells anyone else, and no setting asks for it.
"""

from __future__ import annotations

import functools
from importlib import metadata

from lxml import etree

from ..core.feature import Context, Feature
from ..core.routing import Envelope
from ..xmpp import ns

__all__ = ["FEATURE", "software_version"]

_QUERY = ns.q(ns.VERSION, "query")
_FALLBACK = "0.1.0"


@functools.cache
def software_version() -> str:
    try:
        return metadata.version("xmppd")
    except metadata.PackageNotFoundError:
        return _FALLBACK


async def _version(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element:
    q = etree.Element(_QUERY, nsmap={None: ns.VERSION})
    etree.SubElement(q, ns.q(ns.VERSION, "name")).text = ctx.settings.server_name
    etree.SubElement(q, ns.q(ns.VERSION, "version")).text = software_version()
    return q


FEATURE = Feature(
    name="version",
    xeps=("XEP-0092",),
    disco_features=(ns.VERSION,),
    server_iq={(_QUERY, "get"): _version},
)
