"""XEP-0004 data forms, sans-IO: build form elements and read submitted ones.

A form is ``<x xmlns='jabber:x:data' type='...'>`` holding an optional
``<title/>``, ``<instructions/>`` lines and ``<field/>`` elements. Forms that
belong to a protocol carry a hidden ``FORM_TYPE`` field (XEP-0068) naming it;
:func:`build_form` puts it first when given.

:func:`parse_form` turns a form into ``{var: [values]}``, which is all most
handlers need; :func:`parse_fields` keeps types, labels and options too.
Malformed forms raise :class:`FormError`, a ``bad-request`` stanza error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lxml import etree

from . import ns
from .errors import StanzaCondition, StanzaError

__all__ = [
    "FIELD_TYPES",
    "FORM_TYPES",
    "FORM_TYPE_VAR",
    "Field",
    "FormError",
    "Option",
    "add_field",
    "build_form",
    "find_form",
    "form_type",
    "parse_fields",
    "parse_form",
]

#: XEP-0004 section 3.1: the form types
FORM_TYPES = frozenset({"form", "submit", "cancel", "result"})
#: XEP-0004 section 3.3: the field types
FIELD_TYPES = frozenset(
    {
        "boolean",
        "fixed",
        "hidden",
        "jid-multi",
        "jid-single",
        "list-multi",
        "list-single",
        "text-multi",
        "text-private",
        "text-single",
    }
)
#: XEP-0068: the hidden field naming the form's protocol
FORM_TYPE_VAR = "FORM_TYPE"

X = ns.q(ns.DATA_FORMS, "x")
_FIELD = ns.q(ns.DATA_FORMS, "field")
_VALUE = ns.q(ns.DATA_FORMS, "value")
_OPTION = ns.q(ns.DATA_FORMS, "option")
_REQUIRED = ns.q(ns.DATA_FORMS, "required")
_DESC = ns.q(ns.DATA_FORMS, "desc")
_TITLE = ns.q(ns.DATA_FORMS, "title")
_INSTRUCTIONS = ns.q(ns.DATA_FORMS, "instructions")


class FormError(StanzaError):
    """A malformed data form: ``bad-request``."""

    def __init__(self, text: str) -> None:
        super().__init__(StanzaCondition.BAD_REQUEST, text)


@dataclass(frozen=True, slots=True)
class Option:
    """One ``<option/>`` of a list field."""

    value: str
    label: str | None = None


@dataclass(slots=True)
class Field:
    """One ``<field/>``. ``var`` may be None only for ``fixed`` fields."""

    var: str | None = None
    type: str | None = None
    label: str | None = None
    values: list[str] = field(default_factory=list)
    options: list[Option] = field(default_factory=list)
    required: bool = False
    desc: str | None = None


# ---------------------------------------------------------------------- build


def build_form(
    type_: str = "form",
    form_type: str | None = None,
    fields: Iterable[Field] = (),
    title: str | None = None,
    instructions: str | None = None,
) -> etree._Element:
    """Build ``<x xmlns='jabber:x:data'/>``.

    ``form_type`` becomes the hidden ``FORM_TYPE`` field, first in the form;
    ``instructions`` is split into one ``<instructions/>`` per line, as
    XEP-0004 section 3.2 asks. Invalid types are a programming error
    (ValueError).
    """
    if type_ not in FORM_TYPES:
        raise ValueError(f"unknown data form type {type_!r}")
    form = etree.Element(X, nsmap={None: ns.DATA_FORMS})
    form.set("type", type_)
    if title is not None:
        etree.SubElement(form, _TITLE).text = title
    if instructions is not None:
        for line in instructions.splitlines() or [""]:
            etree.SubElement(form, _INSTRUCTIONS).text = line
    if form_type is not None:
        add_field(form, Field(FORM_TYPE_VAR, "hidden", values=[form_type]))
    for f in fields:
        add_field(form, f)
    return form


def add_field(form: etree._Element, f: Field) -> etree._Element:
    """Append ``f`` to ``form`` and return the ``<field/>`` element."""
    if f.type is not None and f.type not in FIELD_TYPES:
        raise ValueError(f"unknown data form field type {f.type!r}")
    if f.var is None and f.type != "fixed":
        raise ValueError("only fixed fields may go without a var")
    el = etree.SubElement(form, _FIELD)
    if f.var is not None:
        el.set("var", f.var)
    if f.type is not None:
        el.set("type", f.type)
    if f.label is not None:
        el.set("label", f.label)
    if f.desc is not None:
        etree.SubElement(el, _DESC).text = f.desc
    if f.required:
        etree.SubElement(el, _REQUIRED)
    for v in f.values:
        etree.SubElement(el, _VALUE).text = v
    for o in f.options:
        opt = etree.SubElement(el, _OPTION)
        if o.label is not None:
            opt.set("label", o.label)
        etree.SubElement(opt, _VALUE).text = o.value
    return el


# ---------------------------------------------------------------------- parse


def find_form(parent: etree._Element, form_type: str | None = None) -> etree._Element | None:
    """The first data form child of ``parent`` (with that FORM_TYPE, if given)."""
    for child in parent.iterchildren(X):
        if form_type is None or _form_type_of(child) == form_type:
            return child
    return None


def form_type(form: etree._Element) -> str | None:
    """The value of the form's ``FORM_TYPE`` field, if it has one."""
    _check_root(form)
    return _form_type_of(form)


def _form_type_of(form: etree._Element) -> str | None:
    for f in form.iterchildren(_FIELD):
        if f.get("var") == FORM_TYPE_VAR:
            v = f.find(_VALUE)
            return (v.text or "") if v is not None else ""
    return None


def _check_root(form: etree._Element) -> str:
    if form.tag != X:
        raise FormError("not a data form")
    typ = form.get("type")
    if typ not in FORM_TYPES:
        raise FormError(f"bad data form type {typ!r}")
    return typ


def parse_fields(form: etree._Element) -> list[Field]:
    """All fields of ``form`` with everything they carry, in document order."""
    _check_root(form)
    out: list[Field] = []
    seen: set[str] = set()
    for el in form.iterchildren(_FIELD):
        var = el.get("var")
        typ = el.get("type")
        if typ is not None and typ not in FIELD_TYPES:
            raise FormError(f"bad field type {typ!r}")
        if var is not None:
            if var in seen:
                raise FormError(f"field {var!r} appears twice")
            seen.add(var)
        elif typ != "fixed":
            raise FormError("field without var")
        desc = el.find(_DESC)
        out.append(
            Field(
                var=var,
                type=typ,
                label=el.get("label"),
                values=[v.text or "" for v in el.iterchildren(_VALUE)],
                options=[_option(o) for o in el.iterchildren(_OPTION)],
                required=el.find(_REQUIRED) is not None,
                desc=desc.text if desc is not None else None,
            )
        )
    return out


def _option(el: etree._Element) -> Option:
    v = el.find(_VALUE)
    return Option(value=(v.text or "") if v is not None else "", label=el.get("label"))


def parse_form(
    form: etree._Element,
    expect_form_type: str | None = None,
    allowed_types: Sequence[str] = ("submit", "result", "form"),
) -> dict[str, list[str]]:
    """``{var: values}`` of every field that has a var (``FORM_TYPE`` included).

    With ``expect_form_type`` the form's ``FORM_TYPE`` must be that value;
    the form's type must be one of ``allowed_types`` (a ``cancel`` is not
    data). Either mismatch is a :class:`FormError`.
    """
    typ = _check_root(form)
    if typ not in allowed_types:
        raise FormError(f"unexpected data form type {typ!r}")
    if expect_form_type is not None and _form_type_of(form) != expect_form_type:
        raise FormError(f"expected a {expect_form_type} form")
    return {f.var: f.values for f in parse_fields(form) if f.var is not None}
