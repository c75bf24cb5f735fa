"""The JSON codec of the control-plane calls.

Values are JSON with tagged objects for what JSON lacks: bytes, JIDs and the
interface dataclasses (Session, Envelope, RosterItem, ...). Only registered
dataclasses decode, so a peer cannot make us build arbitrary objects.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

from ..core.muc import RoomSummary
from ..core.pubsub import NodeSummary
from ..core.routing import Envelope, Session
from ..core.storage import (
    Account,
    ArchivedMessage,
    ArchivePage,
    ArchiveQuery,
    LastActivity,
    OfflineMessage,
    PubsubItem,
    PushRegistration,
    RosterItem,
    ScramCredentials,
)
from ..xmpp.jid import JID

_TYPES: dict[str, type[Any]] = {
    t.__name__: t
    for t in (
        Session,
        Envelope,
        Account,
        ArchivedMessage,
        ArchivePage,
        ArchiveQuery,
        LastActivity,
        OfflineMessage,
        PubsubItem,
        PushRegistration,
        RosterItem,
        ScramCredentials,
        RoomSummary,
        NodeSummary,
    )
}


def _enc(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, bytes | bytearray):
        return {"$b": base64.b64encode(v).decode()}
    if isinstance(v, JID):
        return {"$j": str(v)}
    if isinstance(v, list | tuple):
        return [_enc(x) for x in v]
    if isinstance(v, set | frozenset):
        return {"$s": [_enc(x) for x in v]}
    if isinstance(v, dict):
        return {"$d": [[_enc(k), _enc(x)] for k, x in v.items()]}
    name = type(v).__name__
    if dataclasses.is_dataclass(v) and name in _TYPES:
        out: dict[str, Any] = {"$t": name}
        for f in dataclasses.fields(v):
            if name == "Envelope" and f.name == "element":
                continue  # the parsed form never crosses a process boundary
            out[f.name] = _enc(getattr(v, f.name))
        return out
    raise TypeError(f"cannot encode {type(v).__name__}")


def _dec(v: Any) -> Any:
    if isinstance(v, list):
        return [_dec(x) for x in v]
    if not isinstance(v, dict):
        return v
    if "$b" in v:
        return base64.b64decode(v["$b"])
    if "$j" in v:
        return JID.parse(v["$j"])
    if "$s" in v:
        return {_dec(x) for x in v["$s"]}
    if "$d" in v:
        return {_dec(k): _dec(x) for k, x in v["$d"]}
    if "$t" in v:
        cls = _TYPES[v["$t"]]
        kw = {k: _dec(x) for k, x in v.items() if k != "$t"}
        if cls is RosterItem and isinstance(kw.get("groups"), list):
            kw["groups"] = tuple(kw["groups"])
        return cls(**kw)
    raise ValueError("untagged object in call payload")


def dumps(value: Any) -> bytes:
    return json.dumps(_enc(value), separators=(",", ":")).encode()


def loads(data: bytes) -> Any:
    return _dec(json.loads(data)) if data else None
