"""deploy/salesforce's permission set: parses, read-only, covers every synced object.

The shipped file is the generator's output for sfdc_assets/objects.yaml and the
emulator's field catalog (regenerated, compared). Not verified: that a real org accepts
the deploy (a field the org lacks, or one without field-level security, is refused by
the Metadata API: regenerate from the org's describes with --describe-dir), and what the
org's sharing and Shield settings add.
"""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sfdc_assets.objects import load_objects

REPO = Path(__file__).resolve().parents[2]
XML = REPO / "deploy/salesforce/permissionsets/SFDC_Sync_Integration.permissionset-meta.xml"
NS = {"m": "http://soap.sforce.com/2006/04/metadata"}


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "permission_set", REPO / "deploy" / "salesforce" / "permission_set.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def root() -> ET.Element:
    return ET.parse(XML).getroot()


def _text(el: ET.Element, tag: str) -> str:
    found = el.find(f"m:{tag}", NS)
    assert found is not None and found.text is not None, tag
    return found.text


def test_the_shipped_file_is_the_generators_output_for_objects_yaml() -> None:
    gen = _generator()
    objects = list(load_objects())
    expected = gen.permission_set_xml(objects, gen._emulator_describes(objects))
    assert XML.read_text() == expected, "regenerate: python deploy/salesforce/permission_set.py"


def test_every_synced_object_is_readable_with_view_all_and_nothing_is_writable(
    root: ET.Element,
) -> None:
    assert root.tag == f"{{{NS['m']}}}PermissionSet"
    perms = {_text(p, "object"): p for p in root.findall("m:objectPermissions", NS)}
    users = {
        _text(p, "name")
        for p in root.findall("m:userPermissions", NS)
        if _text(p, "enabled") == "true"
    }
    assert "ApiEnabled" in users
    for p in perms.values():
        assert _text(p, "allowRead") == "true" and _text(p, "viewAllRecords") == "true"
        for write in ("allowCreate", "allowEdit", "allowDelete", "modifyAllRecords"):
            assert _text(p, write) == "false"
    alternatives = _generator().NO_OBJECT_PERMISSION
    for name in load_objects():
        if name in perms:
            continue
        # No object permission of its own: its read and its change events come from the
        # user permission (or the parent object) CDC documents for it.
        alt = alternatives[name]
        assert alt in users or alt in perms, name
    assert not [
        f for f in root.findall("m:fieldPermissions", NS) if _text(f, "editable") != "false"
    ]


def test_the_fields_the_platform_needs_are_readable(root: ET.Element) -> None:
    readable = {
        _text(f, "field")
        for f in root.findall("m:fieldPermissions", NS)
        if _text(f, "readable") == "true"
    }
    config = load_objects()
    describes = _generator()._emulator_describes(list(config))
    # PII fields must be readable to be synced (and masked) at all; the formula the
    # reconciliation refreshes too; every object with field-level security has fields.
    # Required fields (LastName) and compounds (Name) carry no field-level security.
    for name, obj in config.items():
        if name == "User":
            continue
        always = {f["name"] for f in describes[name]["fields"] if not f["nillable"]} | {"Name"}
        for field in obj.pii_fields:
            if field not in always:
                assert f"{name}.{field}" in readable, f"{name}.{field}"
        assert any(f.startswith(f"{name}.") for f in readable), name
    assert "Opportunity.Account_Rating__c" in readable and "Opportunity.Amount" in readable


def test_a_new_custom_object_gets_its_own_object_permission() -> None:
    gen = _generator()
    describe = {
        "fields": [{"name": "Id", "nillable": False}, {"name": "Score__c", "nillable": True}]
    }
    xml = gen.permission_set_xml(["Invoice__c"], {"Invoice__c": describe})
    root = ET.fromstring(xml)
    (perm,) = root.findall("m:objectPermissions", NS)
    assert _text(perm, "object") == "Invoice__c" and _text(perm, "viewAllRecords") == "true"
    fields = [_text(f, "field") for f in root.findall("m:fieldPermissions", NS)]
    assert fields == ["Invoice__c.Score__c"]


def test_an_org_describe_honours_permissionable() -> None:
    gen = _generator()
    describe = {
        "fields": [
            {"name": "A__c", "nillable": True, "permissionable": False},
            {"name": "B__c", "nillable": True, "permissionable": True},
        ]
    }
    assert gen.fls_fields(describe, org=True) == ["B__c"]
    assert gen.fls_fields(describe) == ["A__c", "B__c"]
