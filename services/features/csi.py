"""XEP-0352 Client State Indication: the stream feature.

After authentication the server advertises ``<csi xmlns='urn:xmpp:csi:0'/>``;
a bound client may then send ``<inactive/>`` and ``<active/>`` (no reply).
The stream state machine accepts the two nonzas exactly where this feature
is advertised (``services/xmpp/c2s.py``); without it they remain unknown
elements (unsupported-stanza-type). What an inactive client is spared is the
edge's business, since the edge writes to it: ``services/edge/csi.py`` has
the rules (presence and chat states held, collapsed per sender, flushed by
anything important), bounded by the ``csi_max_held`` setting.
"""

from __future__ import annotations

from ..core.feature import Feature
from ..xmpp.c2s import CSI_FEATURE

__all__ = ["FEATURE"]

FEATURE = Feature(
    name="csi",
    xeps=("XEP-0352",),
    stream_features=(CSI_FEATURE,),
)
