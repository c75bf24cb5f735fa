"""XEP-0198 Stream Management: the stream feature.

After authentication the server advertises ``<sm xmlns='urn:xmpp:sm:3'/>``;
a bound client may then ``<enable/>`` acknowledgements (and resumption),
and a client whose connection broke may ``<resume/>`` its session on a new
stream instead of binding. The stream state machine accepts the protocol's
elements exactly where this feature is advertised (``services/xmpp/c2s.py``;
without it they remain unknown elements). The counters and the queue of
unacknowledged stanzas are sans-IO (``services/xmpp/sm.py``); what the edge
does with them (counting what it writes, asking for acks, keeping a broken
session for resumption, routing again what was never acknowledged) is in
``services/edge/session.py``, bounded by the ``sm_*`` settings. Resumption
is on the edge that held the session.
"""

from __future__ import annotations

from ..core.feature import Feature
from ..xmpp.sm import FEATURE as SM_FEATURE

__all__ = ["FEATURE"]

FEATURE = Feature(
    name="sm",
    xeps=("XEP-0198",),
    stream_features=(SM_FEATURE,),
)
