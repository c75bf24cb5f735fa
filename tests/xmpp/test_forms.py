"""XEP-0004 data forms: building, parsing, round trips and malformed input."""

from __future__ import annotations

import pytest
from lxml import etree

from services.xmpp import forms, ns
from services.xmpp.errors import StanzaCondition, StanzaError
from services.xmpp.forms import Field, FormError, Option

X = f"{{{ns.DATA_FORMS}}}"


def _reparse(el: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(el))


def test_build_form_structure() -> None:
    form = forms.build_form(
        "form",
        "urn:example:test",
        [
            Field("name", "text-single", "Your name", required=True, desc="what you are called"),
            Field(
                "color",
                "list-single",
                "Colour",
                values=["red"],
                options=[Option("red", "Red"), Option("blue")],
            ),
            Field(None, "fixed", values=["Just a note"]),
        ],
        title="A title",
        instructions="line one\nline two",
    )
    assert form.tag == X + "x"
    assert form.nsmap[None] == ns.DATA_FORMS
    assert form.get("type") == "form"
    assert form.findtext(X + "title") == "A title"
    assert [i.text for i in form.findall(X + "instructions")] == ["line one", "line two"]
    fields = form.findall(X + "field")
    # FORM_TYPE comes first and is hidden
    assert fields[0].get("var") == "FORM_TYPE"
    assert fields[0].get("type") == "hidden"
    assert fields[0].findtext(X + "value") == "urn:example:test"
    name = fields[1]
    assert (name.get("var"), name.get("type"), name.get("label")) == (
        "name",
        "text-single",
        "Your name",
    )
    assert name.find(X + "required") is not None
    assert name.findtext(X + "desc") == "what you are called"
    color = fields[2]
    opts = color.findall(X + "option")
    assert [(o.get("label"), o.findtext(X + "value")) for o in opts] == [
        ("Red", "red"),
        (None, "blue"),
    ]
    assert fields[3].get("var") is None
    assert fields[3].get("type") == "fixed"


def test_round_trip_submit() -> None:
    sent = forms.build_form(
        "submit",
        "jabber:iq:register",
        [
            Field("username", values=["bill"]),
            Field("password", "text-private", values=["Calliope"]),
            Field("features", "list-multi", values=["a", "b", "c"]),
            Field("empty", "text-multi"),
            Field("note", "text-multi", values=["", "x"]),
        ],
    )
    got = forms.parse_form(_reparse(sent), expect_form_type="jabber:iq:register")
    assert got == {
        "FORM_TYPE": ["jabber:iq:register"],
        "username": ["bill"],
        "password": ["Calliope"],
        "features": ["a", "b", "c"],
        "empty": [],
        "note": ["", "x"],
    }
    assert forms.form_type(sent) == "jabber:iq:register"


def test_round_trip_fields() -> None:
    original = [
        Field("FORM_TYPE", "hidden", values=["urn:x"]),
        Field("a", "boolean", "A?", values=["1"], required=True, desc="d"),
        Field("b", "list-single", options=[Option("1", "one"), Option("2")]),
        Field(None, "fixed", values=["hello"]),
    ]
    form = forms.build_form("form", None, original)
    assert forms.parse_fields(_reparse(form)) == original


def test_instructions_and_type_defaults() -> None:
    form = forms.build_form()
    assert form.get("type") == "form"
    assert len(form) == 0
    assert forms.form_type(form) is None


def test_find_form() -> None:
    parent = etree.Element("{jabber:iq:register}query")
    a = forms.build_form("result", "urn:a")
    b = forms.build_form("result", "urn:b")
    parent.append(a)
    parent.append(b)
    assert forms.find_form(parent) is a
    assert forms.find_form(parent, "urn:b") is b
    assert forms.find_form(parent, "urn:c") is None
    assert forms.find_form(etree.Element("empty")) is None


def test_parse_example_from_xep_0004() -> None:
    xml = f"""<x xmlns='{ns.DATA_FORMS}' type='submit'>
      <field type='hidden' var='FORM_TYPE'><value>jabber:bot</value></field>
      <field type='text-single' var='botname'><value>The Jabber Google Bot</value></field>
      <field type='boolean' var='public'><value>0</value></field>
      <field type='text-private' var='password'><value>v3r0na</value></field>
      <field type='list-multi' var='features'>
        <value>news</value><value>search</value>
      </field>
      <field type='list-single' var='maxsubs'><value>50</value></field>
      <field type='jid-multi' var='invitelist'>
        <value>juliet@capulet.com</value><value>benvolio@montague.net</value>
      </field>
    </x>"""
    got = forms.parse_form(etree.fromstring(xml))
    assert got["features"] == ["news", "search"]
    assert got["invitelist"] == ["juliet@capulet.com", "benvolio@montague.net"]
    assert got["public"] == ["0"]
    assert forms.form_type(etree.fromstring(xml)) == "jabber:bot"


@pytest.mark.parametrize(
    "xml",
    [
        "<x xmlns='urn:other' type='submit'/>",
        f"<x xmlns='{ns.DATA_FORMS}'/>",
        f"<x xmlns='{ns.DATA_FORMS}' type='bogus'/>",
        f"<x xmlns='{ns.DATA_FORMS}' type='submit'><field var='a'/><field var='a'/></x>",
        f"<x xmlns='{ns.DATA_FORMS}' type='submit'><field type='text-single'/></x>",
        f"<x xmlns='{ns.DATA_FORMS}' type='submit'><field var='a' type='nope'/></x>",
        f"<x xmlns='{ns.DATA_FORMS}' type='cancel'/>",
    ],
)
def test_malformed_forms_are_bad_request(xml: str) -> None:
    with pytest.raises(FormError) as exc:
        forms.parse_form(etree.fromstring(xml))
    assert isinstance(exc.value, StanzaError)
    assert exc.value.condition is StanzaCondition.BAD_REQUEST


def test_wrong_form_type_is_bad_request() -> None:
    form = forms.build_form("submit", "urn:a")
    with pytest.raises(FormError):
        forms.parse_form(form, expect_form_type="urn:b")
    with pytest.raises(FormError):
        forms.parse_form(forms.build_form("submit"), expect_form_type="urn:b")
    with pytest.raises(FormError):
        forms.parse_form(form, allowed_types=("result",))


def test_build_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        forms.build_form("bogus")
    with pytest.raises(ValueError):
        forms.build_form("form", None, [Field("a", "bogus")])
    with pytest.raises(ValueError):
        forms.build_form("form", None, [Field(None, "text-single")])
