"""The list of feature modules, loading them, and the README's XEP table.

:data:`FEATURE_MODULES` names every module that exports ``FEATURE``; the
embedded server loads them all (:func:`load_features`), and
``xmppctl features`` prints :func:`features_markdown` of them, so the README
never claims more (or less) than the server does.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable

from ..core.feature import Feature

__all__ = [
    "FEATURE_MODULES",
    "XEP_TITLES",
    "features_markdown",
    "load_configured",
    "load_features",
]

FEATURE_MODULES: list[str] = [
    "services.features.core",
    "services.features.disco",
    "services.features.roster",
    "services.features.session",
    "services.features.register",
    "services.features.version",
    "services.features.ping",
    "services.features.time",
    "services.features.last",
    "services.features.vcard",
    "services.features.private",
    "services.features.blocking",
    "services.features.mam",
    # before offline: its undelivered hook notifies, then lets offline keep the message
    "services.features.push",
    "services.features.offline",
    "services.features.presence",
    "services.features.pep",
    "services.features.csi",
    "services.features.sm",
    "services.features.carbons",
]

#: titles of the XEPs the modules name, for the README table
XEP_TITLES: dict[str, str] = {
    "XEP-0004": "Data Forms",
    "XEP-0012": "Last Activity",
    "XEP-0013": "Flexible Offline Message Retrieval",
    "XEP-0030": "Service Discovery",
    "XEP-0048": "Bookmarks (in private XML storage)",
    "XEP-0049": "Private XML Storage",
    "XEP-0054": "vcard-temp",
    "XEP-0153": "vCard-Based Avatars",
    "XEP-0077": "In-Band Registration",
    "XEP-0082": "XMPP Date and Time Profiles",
    "XEP-0083": "Nested Roster Groups (in private XML storage)",
    "XEP-0084": "User Avatar",
    "XEP-0092": "Software Version",
    "XEP-0115": "Entity Capabilities",
    "XEP-0136": "Message Archiving (read-only)",
    "XEP-0128": "Service Discovery Extensions",
    "XEP-0145": "Annotations (in private XML storage)",
    "XEP-0157": "Contact Addresses for XMPP Services",
    "XEP-0160": "Best Practices for Handling Offline Messages",
    "XEP-0163": "Personal Eventing Protocol",
    "XEP-0191": "Blocking Command",
    "XEP-0198": "Stream Management",
    "XEP-0199": "XMPP Ping",
    "XEP-0222": "Persistent Storage of Public Data via PubSub",
    "XEP-0223": "Persistent Storage of Private Data via PubSub",
    "XEP-0313": "Message Archive Management",
    "XEP-0359": "Unique and Stable Stanza IDs",
    "XEP-0352": "Client State Indication",
    "XEP-0357": "Push Notifications",
    "XEP-0398": "User Avatar to vCard-Based Avatars Conversion",
    "XEP-0402": "PEP Native Bookmarks",
    "XEP-0411": "Bookmarks Conversion",
    "XEP-0202": "Entity Time",
    "XEP-0203": "Delayed Delivery",
    "XEP-0237": "Roster Versioning",
    "XEP-0256": "Last Activity in Presence",
    "XEP-0280": "Message Carbons",
    "XEP-0334": "Message Processing Hints",
    "XEP-0368": "SRV records for XMPP over TLS (direct TLS)",
}

_XEP = re.compile(r"^XEP-(\d{4})$")


def load_configured(extra: Iterable[str] = ()) -> list[Feature]:
    """Every shipped feature, then the operator's own (``features_extra``:
    import paths of modules or packages that export ``FEATURE``)."""
    out = load_features()
    for path in extra:
        feature = getattr(importlib.import_module(path), "FEATURE", None)
        if not isinstance(feature, Feature):
            raise TypeError(f"{path} does not export FEATURE: Feature")
        out.append(feature)
    return out


def load_features(names: Iterable[str] | None = None) -> list[Feature]:
    """Import the feature modules and return their ``FEATURE`` declarations.

    ``names`` selects modules, by import path or by short name (``"disco"``);
    None means all of :data:`FEATURE_MODULES`. An unknown name is a
    ValueError; a module that cannot be imported raises its ImportError
    (a server silently missing a feature is worse than one that does not
    start).
    """
    if names is None:
        paths = list(FEATURE_MODULES)
    else:
        by_short = {p.rsplit(".", 1)[-1]: p for p in FEATURE_MODULES}
        paths = []
        for n in names:
            path = n if n in FEATURE_MODULES else by_short.get(n)
            if path is None:
                raise ValueError(f"unknown feature module {n!r}")
            if path not in paths:
                paths.append(path)
    out: list[Feature] = []
    for path in paths:
        feature = getattr(importlib.import_module(path), "FEATURE", None)
        if not isinstance(feature, Feature):
            raise TypeError(f"{path} does not export FEATURE: Feature")
        out.append(feature)
    return out


def _xep_key(xep: str) -> tuple[int, str]:
    m = _XEP.match(xep)
    return (int(m.group(1)), xep) if m else (10**6, xep)


def features_markdown(features: Iterable[Feature]) -> str:
    """A Markdown table of the XEPs the features implement, by number."""
    by_xep: dict[str, list[str]] = {}
    for f in features:
        for xep in f.xeps:
            names = by_xep.setdefault(xep, [])
            if f.name not in names:
                names.append(f.name)
    rows = ["| XEP | title | module |", "|---|---|---|"]
    for xep in sorted(by_xep, key=_xep_key):
        m = _XEP.match(xep)
        label = f"[{xep}](https://xmpp.org/extensions/xep-{m.group(1)}.html)" if m else xep
        title = XEP_TITLES.get(xep, "")
        rows.append(f"| {label} | {title} | {', '.join(f'`{n}`' for n in by_xep[xep])} |")
    return "\n".join(rows)
