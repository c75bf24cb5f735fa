"""Personal eventing (XEP-0163): every account is a pubsub service of its
own. This declaration hands what PEP needs to the pubsub service (the
:class:`~services.core.pubsub.Pubsub` contract, in-process or the pubsub
role), without the router knowing about either: pubsub IQs addressed to an
account's bare JID, and a session's available presence (the last items it
asks for, XEP-0163 6.3). Avatars (XEP-0084), nicknames (XEP-0172),
bookmarks (XEP-0402), OMEMO keys and XEP-0222/0223 storage are ordinary PEP
nodes."""

from __future__ import annotations

from lxml import etree

from ..core.feature import NO_REPLY, Context, Feature
from ..core.pubsub import pubsub_of
from ..core.routing import Envelope, Session

PUBSUB = "http://jabber.org/protocol/pubsub"
PUBSUB_OWNER = PUBSUB + "#owner"
_TAG = f"{{{PUBSUB}}}pubsub"
_OWNER_TAG = f"{{{PUBSUB_OWNER}}}pubsub"


async def _iq(ctx: Context, env: Envelope, payload: etree._Element) -> etree._Element | None:
    await pubsub_of(ctx).route(env.to.bare, env)
    return NO_REPLY


async def _available(ctx: Context, s: Session) -> None:
    if s.presence is not None:
        await pubsub_of(ctx).available(s.jid, s.presence)


#: what an account's disco#info shows (XEP-0163 1: the pubsub/pep identity
#: and the XEP-0060 features the service supports)
_FEATURES = tuple(
    f"{PUBSUB}#{f}"
    for f in (
        "access-presence",
        "auto-create",
        "auto-subscribe",
        "config-node",
        "create-and-configure",
        "create-nodes",
        "delete-items",
        "delete-nodes",
        "filtered-notifications",
        "item-ids",
        "last-published",
        "multi-items",
        "persistent-items",
        "presence-notifications",
        "publish",
        "publish-options",
        "purge-nodes",
        "retract-items",
        "retrieve-items",
        "subscribe",
    )
)

#: bookmarks kept in step between private XML and PEP (services/pubsub/bookmarks.py)
_BOOKMARKS = (
    "urn:xmpp:bookmarks-conversion:0",
    "urn:xmpp:bookmarks:1#compat",
    "urn:xmpp:bookmarks:1#compat-pep",
)

FEATURE = Feature(
    name="pep",
    xeps=("XEP-0084", "XEP-0163", "XEP-0222", "XEP-0223", "XEP-0398", "XEP-0402", "XEP-0411"),
    storage=("pubsub_nodes", "pubsub_items"),
    account_disco_features=(PUBSUB, *_FEATURES, *_BOOKMARKS, "urn:xmpp:pep-vcard-conversion:0"),
    account_identities=(("pubsub", "pep"),),
    account_iq={
        (_TAG, "get"): _iq,
        (_TAG, "set"): _iq,
        (_OWNER_TAG, "get"): _iq,
        (_OWNER_TAG, "set"): _iq,
    },
    session_available=(_available,),
)
