"""Catalog, describe JSON and Id tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfdc_emulator import ids
from sfdc_emulator.describe import (
    DEFAULT_OBJECTS,
    OPPORTUNITY_STAGES,
    FieldDef,
    default_catalog,
    describe_global,
)
from sfdc_emulator.schema import OrgSchema

ALLOWED_TYPES = {
    "id", "boolean", "string", "textarea", "int", "double", "currency", "percent", "date",
    "datetime", "reference", "picklist", "multipicklist", "email", "phone", "url", "address",
}  # fmt: skip
FIELD_KEYS = {
    "name", "label", "type", "soapType", "length", "byteLength", "precision", "scale", "digits",
    "nillable", "createable", "updateable", "calculated", "calculatedFormula", "defaultValue",
    "defaultedOnCreate", "unique", "externalId", "idLookup", "filterable", "sortable",
    "groupable", "custom", "compoundFieldName", "referenceTo", "relationshipName",
    "restrictedPicklist", "picklistValues",
}  # fmt: skip
TOP_KEYS = {
    "name", "label", "labelPlural", "keyPrefix", "custom", "createable", "updateable",
    "deletable", "queryable", "retrieveable", "replicateable", "searchable", "triggerable",
    "undeletable", "fields", "childRelationships", "recordTypeInfos", "urls",
}  # fmt: skip
BASE62 = st.text(alphabet=ids.BASE62, min_size=15, max_size=15)


def test_known_15_char_id_gets_the_documented_checksum_suffix() -> None:
    assert ids.to_18("001D000000IqhSL") == "001D000000IqhSLIAZ"
    assert ids.to_15("001D000000IqhSLIAZ") == "001D000000IqhSL"


@given(BASE62)
def test_every_18_char_id_validates_and_round_trips(id15: str) -> None:
    id18 = ids.to_18(id15)
    assert ids.is_valid_id(id18)
    assert ids.to_18(id18) == id18
    assert ids.to_15(id18) == id15


@given(BASE62, st.data())
def test_ids_differing_only_in_case_differ_case_insensitively_after_the_suffix(
    id15: str, data: st.DataObject
) -> None:
    flip = data.draw(st.integers(0, 14))
    ch = id15[flip]
    if not ch.isalpha():
        return
    other = id15[:flip] + ch.swapcase() + id15[flip + 1 :]
    assert ids.to_18(id15).lower() != ids.to_18(other).lower()


def test_corrupted_checksum_is_not_a_valid_id() -> None:
    assert not ids.is_valid_id("001D000000IqhSLAAA")
    assert not ids.is_valid_id("001D000000IqhS")


@given(st.integers(1, ids.MAX_COUNTER - 100), st.integers(1, 50))
def test_vectorised_ids_equal_the_scalar_ids(start: int, count: int) -> None:
    assert ids.make_ids("00T", start, count).to_pylist() == [
        ids.make_id("00T", c) for c in range(start, start + count)
    ]


def test_ids_of_one_prefix_sort_like_their_counters() -> None:
    made = [ids.make_id("006", c) for c in (1, 9, 10, 61, 62, 3843, 3844, 10**9)]
    assert made == sorted(made)


def test_every_object_has_the_system_fields_and_its_real_key_prefix() -> None:
    prefixes = {
        "Account": "001", "Contact": "003", "Lead": "00Q", "Opportunity": "006",
        "OpportunityLineItem": "00k", "User": "005", "Task": "00T", "Event": "00U",
    }  # fmt: skip
    assert {o.name: o.key_prefix for o in DEFAULT_OBJECTS} == prefixes
    for spec in DEFAULT_OBJECTS:
        names = spec.field_names()
        assert len(names) == len(set(names)), spec.name
        for system in ("Id", "IsDeleted", "CreatedDate", "CreatedById", "LastModifiedDate",
                       "LastModifiedById", "SystemModstamp"):  # fmt: skip
            assert system in names, (spec.name, system)
        assert spec.field("Id").type == "id"
        assert spec.field("SystemModstamp").type == "datetime"
        assert spec.field("CreatedById").reference_to == ("User",)


def test_field_types_references_and_picklists_are_well_formed() -> None:
    for spec in DEFAULT_OBJECTS:
        for f in spec.fields:
            assert f.type in ALLOWED_TYPES, (spec.name, f.name)
            if f.type == "reference":
                assert f.reference_to and f.relationship_name, (spec.name, f.name)
            if f.type == "picklist":
                assert f.picklist_values, (spec.name, f.name)
            if f.name.endswith("__c"):
                assert f.custom


def test_opportunity_fields_carry_salesforce_types() -> None:
    opp = default_catalog()["Opportunity"]
    assert opp.field("stagename").picklist_values == tuple(OPPORTUNITY_STAGES)
    assert "Closed Won" in opp.field("StageName").picklist_values
    amount = opp.field("Amount")
    assert (amount.type, amount.precision, amount.scale) == ("currency", 18, 2)
    assert opp.field("Probability").type == "percent"
    expected = opp.field("ExpectedRevenue")
    assert expected.calculated and expected.formula and not expected.createable
    assert opp.field("CloseDate").type == "date"
    assert not opp.field("IsWon").updateable
    assert opp.field("AccountId").relationship_name == "Account"
    assert any(f.custom for f in opp.fields)


def test_compound_fields_name_their_components() -> None:
    contact = default_catalog()["Contact"]
    assert contact.field("LastName").compound_field_name == "Name"
    assert contact.field("Name").calculated
    assert contact.field("MailingAddress").type == "address"
    assert not contact.field("MailingAddress").stored
    assert contact.field("MailingCity").compound_field_name == "MailingAddress"
    assert contact.field("Email").pii and contact.field("MailingStreet").pii
    assert "MailingAddress" not in [f.name for f in contact.stored_fields()]
    lead = default_catalog()["Lead"]
    assert lead.field("City").compound_field_name == "Address"


def test_unknown_field_lookup_raises_key_error_naming_object_and_field() -> None:
    with pytest.raises(KeyError, match=r"Nope__c.*Account"):
        default_catalog()["Account"].field("Nope__c")


def test_describe_json_has_the_documented_keys() -> None:
    for spec in DEFAULT_OBJECTS:
        body = spec.describe_json("59.0")
        assert set(body) >= TOP_KEYS, spec.name
        assert body["keyPrefix"] == spec.key_prefix
        assert body["urls"]["sobject"] == f"/services/data/v59.0/sobjects/{spec.name}"
        for field_json in body["fields"]:
            assert set(field_json) >= FIELD_KEYS, (spec.name, field_json["name"])


def test_describe_json_renders_picklists_references_and_compounds() -> None:
    body = default_catalog()["Opportunity"].describe_json("59.0")
    fields = {f["name"]: f for f in body["fields"]}
    stage = fields["StageName"]
    assert stage["type"] == "picklist" and stage["soapType"] == "xsd:string"
    assert [p["value"] for p in stage["picklistValues"]] == list(OPPORTUNITY_STAGES)
    assert fields["AccountId"]["referenceTo"] == ["Account"]
    assert fields["Amount"]["soapType"] == "xsd:double" and fields["Amount"]["scale"] == 2
    assert fields["ExpectedRevenue"]["calculatedFormula"]
    account = default_catalog()["Account"].describe_json("59.0")
    children = {(c["childSObject"], c["relationshipName"]) for c in account["childRelationships"]}
    assert ("Opportunity", "Opportunities") in children
    assert ("Contact", "Contacts") in children
    billing = {f["name"]: f for f in account["fields"]}["BillingCity"]
    assert billing["compoundFieldName"] == "BillingAddress"


def test_describe_global_lists_every_object() -> None:
    body = describe_global(DEFAULT_OBJECTS, "59.0")
    assert [s["name"] for s in body["sobjects"]] == [o.name for o in DEFAULT_OBJECTS]
    assert all(s["queryable"] and s["replicateable"] for s in body["sobjects"])


def test_org_schema_changes_bump_versions_and_round_trip_through_json() -> None:
    schema = OrgSchema()
    assert schema.version("Opportunity") == 1
    schema.add_field("Opportunity", FieldDef("Segment__c", "string", "Segment", length=40))
    schema.set_picklist("Opportunity", "Region__c", ["AMER", "EMEA"])
    schema.remove_field("Opportunity", "Competitor__c")
    assert schema.version("opportunity") == 4
    again = OrgSchema.from_json(schema.to_json())
    assert again.get("Opportunity") == schema.get("Opportunity")
    assert again.version("Opportunity") == 4
    assert not again.get("Opportunity").has_field("Competitor__c")


def test_org_schema_refuses_removing_system_and_derived_fields() -> None:
    schema = OrgSchema()
    for name in ("SystemModstamp", "ExpectedRevenue", "IsWon"):
        with pytest.raises(ValueError):
            schema.remove_field("Opportunity", name)
    with pytest.raises(ValueError, match="already exists"):
        schema.add_field("Account", FieldDef("Name", "string", "Name"))
