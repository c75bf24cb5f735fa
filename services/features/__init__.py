"""Server features, one module per XEP or XEP family.

Each module exposes ``FEATURE``: a :class:`~services.core.feature.Feature`
declaring what it implements (XEPs, disco features) and its IQ handlers. The
router dispatches IQs to them; the README's feature list is generated from
these declarations (``xmppctl features``).
"""
