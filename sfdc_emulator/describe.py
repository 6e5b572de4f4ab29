"""Object catalog of the emulated org: FieldDef / SObjectDef, the 8 default objects, and the
``sobjects/{Obj}/describe`` and describe-global JSON bodies built from them.

The names say "definition": these are what the org *is* (its tables, Avro schemas and
describe bodies are derived from them), unlike ``sync_engine.spec.FieldSpec/ObjectSpec``,
the sync's view of an object built from a describe body.

Field names, types, lengths and picklist values follow the standard Salesforce objects
(Winter '24 era) closely enough that a client driven by describe behaves as against a real
org; a few custom ``__c`` fields per object exercise the custom-field paths.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sfdc_emulator.ids import KEY_PREFIXES

STRING_TYPES = frozenset(
    {
        "id",
        "reference",
        "string",
        "textarea",
        "picklist",
        "multipicklist",
        "combobox",
        "email",
        "phone",
        "url",
    }
)
NUMBER_TYPES = frozenset({"int", "double", "currency", "percent"})

_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
    "address": "urn:address",
}

# Opportunity stage -> (default probability %, forecast category, IsClosed, IsWon): the
# standard sales process of a new org.
OPPORTUNITY_STAGES: dict[str, tuple[int, str, bool, bool]] = {
    "Prospecting": (10, "Pipeline", False, False),
    "Qualification": (10, "Pipeline", False, False),
    "Needs Analysis": (20, "Pipeline", False, False),
    "Value Proposition": (50, "Pipeline", False, False),
    "Id. Decision Makers": (60, "Pipeline", False, False),
    "Perception Analysis": (70, "Pipeline", False, False),
    "Proposal/Price Quote": (75, "Pipeline", False, False),
    "Negotiation/Review": (90, "Commit", False, False),
    "Closed Won": (100, "Closed", True, True),
    "Closed Lost": (0, "Omitted", True, False),
}
TASK_CLOSED_STATUSES = frozenset({"Completed"})
LEAD_CONVERTED_STATUS = "Closed - Converted"

# Child field order of the compound Avro records (and of child bitmaps).
PERSON_NAME_PARTS = ("Salutation", "FirstName", "LastName", "MiddleName", "Suffix", "InformalName")
ADDRESS_PARTS = (
    "Street",
    "City",
    "State",
    "PostalCode",
    "Country",
    "StateCode",
    "CountryCode",
    "Latitude",
    "Longitude",
    "GeocodeAccuracy",
)


@dataclass(frozen=True)
class FieldDef:
    """One field of an object, as describe reports it (plus the emulator's PII flag)."""

    name: str
    type: str
    label: str
    length: int = 0
    precision: int = 0
    scale: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    calculated: bool = False
    formula: str | None = None
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    picklist_values: tuple[str, ...] = ()
    compound_field_name: str | None = None
    custom: bool = False
    pii: bool = False
    default_value: Any = None
    unique: bool = False
    external_id: bool = False
    name_field: bool = False
    restricted_picklist: bool = False
    child_relationship_name: str | None = None  # e.g. Contact.AccountId -> "Contacts"

    @property
    def stored(self) -> bool:
        """False only for compound address parents: their values live in the components."""
        return self.type != "address"

    @property
    def is_formula(self) -> bool:
        """A formula field (describe: ``calculated`` with a ``calculatedFormula``): change
        events never carry it (null in the body, never in a bitmap). The person ``Name``
        is calculated too but has no formula: it travels as its compound components."""
        return self.calculated and self.formula is not None

    def describe_json(self) -> dict[str, Any]:
        """The per-field entry of the describe body."""
        t = self.type
        string_like = t in STRING_TYPES
        length = self.length if string_like else 0
        filterable = t not in ("textarea", "address") or (t == "textarea" and length <= 255)
        sortable = t not in ("textarea", "multipicklist", "address") or (
            t == "textarea" and length <= 255
        )
        groupable = sortable and t not in ("double", "currency", "percent", "datetime")
        defaulted = t == "boolean" or self.default_value is not None or self.name in _SYSTEM
        picklist = [
            {
                "active": True,
                "defaultValue": value == self.default_value,
                "label": value,
                "validFor": None,
                "value": value,
            }
            for value in self.picklist_values
        ]
        default = self.default_value
        if t == "boolean" and default is None:
            default = False
        return {
            "aggregatable": t not in ("textarea", "address", "boolean") or length <= 255,
            "aiPredictionField": False,
            "autoNumber": False,
            "byteLength": length * 3 if string_like else 0,
            "calculated": self.calculated,
            "calculatedFormula": self.formula,
            "cascadeDelete": False,
            "caseSensitive": False,
            "compoundFieldName": self.compound_field_name,
            "controllerName": None,
            "createable": self.createable,
            "custom": self.custom,
            "defaultValue": default,
            "defaultValueFormula": None,
            "defaultedOnCreate": defaulted,
            "dependentPicklist": False,
            "deprecatedAndHidden": False,
            "digits": 9 if t == "int" else 0,
            "displayLocationInDecimal": False,
            "encrypted": False,
            "externalId": self.external_id,
            "extraTypeInfo": _extra_type_info(self),
            "filterable": filterable,
            "filteredLookupInfo": None,
            "formulaTreatNullNumberAsZero": False,
            "groupable": groupable,
            "highScaleNumber": False,
            "htmlFormatted": False,
            "idLookup": t == "id" or self.external_id or self.name == "Email",
            "inlineHelpText": None,
            "label": self.label,
            "length": length,
            "mask": None,
            "maskType": None,
            "name": self.name,
            "nameField": self.name_field,
            "namePointing": len(self.reference_to) > 1,
            "nillable": self.nillable,
            "permissionable": self.nillable and self.createable and self.custom,
            "picklistValues": picklist,
            "polymorphicForeignKey": len(self.reference_to) > 1,
            "precision": self.precision,
            "queryByDistance": False,
            "referenceTargetField": None,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "relationshipOrder": None,
            "restrictedDelete": False,
            "restrictedPicklist": self.restricted_picklist,
            "scale": self.scale,
            "searchPrefilterable": False,
            "soapType": _SOAP_TYPES.get(t, "xsd:string"),
            "sortable": sortable,
            "type": t,
            "unique": self.unique,
            "updateable": self.updateable,
            "writeRequiresMasterRead": False,
        }


# The emulator's FieldDef was called FieldSpec, like sync_engine's; tests outside the
# emulator still import the old name.
FieldSpec = FieldDef


def _extra_type_info(f: FieldDef) -> str | None:
    if f.type == "textarea":
        return "plaintextarea"
    if f.compound_field_name is not None and f.name.endswith(("Latitude", "Longitude")):
        return None
    if f.type == "reference" and f.name in ("CreatedById", "LastModifiedById", "OwnerId"):
        return None
    if f.name in ("Name", "FirstName", "LastName") and f.compound_field_name == "Name":
        return "personname"
    return None


_SYSTEM = frozenset(
    {
        "Id",
        "IsDeleted",
        "CreatedDate",
        "CreatedById",
        "LastModifiedDate",
        "LastModifiedById",
        "SystemModstamp",
    }
)
SYSTEM_FIELDS = _SYSTEM


@dataclass(frozen=True)
class SObjectDef:
    """One sObject type: its key prefix and fields in describe order."""

    name: str
    label: str
    label_plural: str
    key_prefix: str
    fields: tuple[FieldDef, ...] = field(default_factory=tuple)
    custom: bool = False

    def field(self, name: str) -> FieldDef:
        """The field named ``name`` (case-insensitive); KeyError if unknown."""
        key = name.lower()
        for f in self.fields:
            if f.name.lower() == key:
                return f
        raise KeyError(f"No such column '{name}' on entity '{self.name}'")

    def has_field(self, name: str) -> bool:
        key = name.lower()
        return any(f.name.lower() == key for f in self.fields)

    def stored_fields(self) -> list[FieldDef]:
        """DB columns in describe order (every field except compound address parents)."""
        return [f for f in self.fields if f.stored]

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def pii_fields(self) -> list[str]:
        return [f.name for f in self.fields if f.pii]

    def describe_json(
        self, api_version: str, catalog: Iterable[SObjectDef] | None = None
    ) -> dict[str, Any]:
        """The ``sobjects/{Obj}/describe`` body. ``catalog`` (all objects of the org, default:
        the default catalog) supplies the childRelationships."""
        base = f"/services/data/v{api_version}/sobjects/{self.name}"
        objects = list(catalog) if catalog is not None else list(DEFAULT_OBJECTS)
        children = []
        for other in objects:
            for f in other.fields:
                if self.name in f.reference_to and f.relationship_name:
                    children.append(
                        {
                            "cascadeDelete": other.name == "OpportunityLineItem",
                            "childSObject": other.name,
                            "deprecatedAndHidden": False,
                            "field": f.name,
                            "junctionIdListNames": [],
                            "junctionReferenceTo": [],
                            "relationshipName": f.child_relationship_name,
                            "restrictedDelete": False,
                        }
                    )
        flags = _object_flags(self)
        return {
            **flags,
            "actionOverrides": [],
            "activateable": False,
            "associateEntityType": None,
            "associateParentEntity": None,
            "childRelationships": children,
            "compactLayoutable": True,
            "custom": self.custom,
            "customSetting": False,
            "deepCloneable": False,
            "defaultImplementation": None,
            "deprecatedAndHidden": False,
            "extendedBy": None,
            "extendsInterfaces": None,
            "feedEnabled": True,
            "fields": [f.describe_json() for f in self.fields],
            "hasSubtypes": False,
            "implementedBy": None,
            "implementsInterfaces": None,
            "isInterface": False,
            "isSubtype": False,
            "keyPrefix": self.key_prefix,
            "label": self.label,
            "labelPlural": self.label_plural,
            "layoutable": True,
            "listviewable": None,
            "lookupLayoutable": None,
            "mergeable": self.name in ("Account", "Contact", "Lead"),
            "mruEnabled": True,
            "name": self.name,
            "namedLayoutInfos": [],
            "networkScopeFieldName": None,
            "recordTypeInfos": [
                {
                    "active": True,
                    "available": True,
                    "defaultRecordTypeMapping": True,
                    "developerName": "Master",
                    "master": True,
                    "name": "Master",
                    "recordTypeId": "012000000000000AAA",
                    "urls": {"layout": f"{base}/describe/layouts/012000000000000AAA"},
                }
            ],
            "searchLayoutable": True,
            "supportedScopes": [{"label": "All records", "name": "everything"}],
            "urls": {
                "compactLayouts": f"{base}/describe/compactLayouts",
                "rowTemplate": f"{base}/{{ID}}",
                "approvalLayouts": f"{base}/describe/approvalLayouts",
                "uiDetailTemplate": None,
                "uiEditTemplate": None,
                "defaultValues": f"{base}/defaultValues?recordTypeId&fields",
                "describe": f"{base}/describe",
                "uiNewRecord": None,
                "quickActions": f"{base}/quickActions",
                "layouts": f"{base}/describe/layouts",
                "sobject": base,
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (persisted by OrgSchema)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SObjectDef:
        fields = tuple(field_from_dict(f) for f in data["fields"])
        return cls(
            name=data["name"],
            label=data["label"],
            label_plural=data["label_plural"],
            key_prefix=data["key_prefix"],
            fields=fields,
            custom=bool(data.get("custom", False)),
        )


def field_from_dict(data: Mapping[str, Any]) -> FieldDef:
    """Inverse of ``dataclasses.asdict`` for FieldDef (lists back to tuples)."""
    known = {f.name for f in dataclasses.fields(FieldDef)}
    kwargs = {k: v for k, v in data.items() if k in known}
    for key in ("reference_to", "picklist_values"):
        kwargs[key] = tuple(kwargs.get(key) or ())
    return FieldDef(**kwargs)


def _object_flags(spec: SObjectDef) -> dict[str, bool]:
    # User rows cannot be deleted in Salesforce; everything else here is fully DML-able.
    deletable = spec.name != "User"
    return {
        "createable": True,
        "updateable": True,
        "deletable": deletable,
        "undeletable": deletable,
        "queryable": True,
        "retrieveable": True,
        "replicateable": True,
        "searchable": spec.name != "OpportunityLineItem",
        "triggerable": True,
    }


def describe_global_entry(spec: SObjectDef, api_version: str) -> dict[str, Any]:
    """One element of ``sobjects`` in the describe-global body."""
    base = f"/services/data/v{api_version}/sobjects/{spec.name}"
    return {
        "activateable": False,
        "associateEntityType": None,
        "associateParentEntity": None,
        **_object_flags(spec),
        "custom": spec.custom,
        "customSetting": False,
        "deepCloneable": False,
        "deprecatedAndHidden": False,
        "feedEnabled": True,
        "hasSubtypes": False,
        "isInterface": False,
        "isSubtype": False,
        "keyPrefix": spec.key_prefix,
        "label": spec.label,
        "labelPlural": spec.label_plural,
        "layoutable": True,
        "mergeable": spec.name in ("Account", "Contact", "Lead"),
        "mruEnabled": True,
        "name": spec.name,
        "urls": {
            "rowTemplate": f"{base}/{{ID}}",
            "defaultValues": f"{base}/defaultValues?recordTypeId&fields",
            "describe": f"{base}/describe",
            "sobject": base,
        },
    }


def describe_global(specs: Iterable[SObjectDef], api_version: str) -> dict[str, Any]:
    """The ``GET /services/data/vXX.X/sobjects/`` body."""
    return {
        "encoding": "UTF-8",
        "maxBatchSize": 200,
        "sobjects": [describe_global_entry(s, api_version) for s in specs],
    }


def _label(name: str) -> str:
    base = name.removesuffix("__c").replace("_", " ")
    if base.endswith("Id") and len(base) > 2:
        base = base[:-2] + " ID"
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", base).strip()


def _f(name: str, type_: str, label: str | None = None, **kw: Any) -> FieldDef:
    if name.endswith("__c"):
        kw.setdefault("custom", True)
    if type_ == "boolean":
        kw.setdefault("nillable", False)
        kw.setdefault("default_value", False)
    if type_ == "currency":
        kw.setdefault("precision", 18)
        kw.setdefault("scale", 2)
    if type_ == "percent":
        kw.setdefault("precision", 3)
    if type_ == "double":
        kw.setdefault("precision", 18)
    if type_ in ("id", "reference"):
        kw.setdefault("length", 18)
    if type_ == "textarea":
        kw.setdefault("length", 32000)
    if type_ in ("picklist", "multipicklist"):
        kw.setdefault("length", 255)
    if type_ == "email":
        kw.setdefault("length", 80)
    if type_ == "phone":
        kw.setdefault("length", 40)
    if type_ == "url":
        kw.setdefault("length", 255)
    return FieldDef(name=name, type=type_, label=label or _label(name), **kw)


def _ref(
    name: str,
    to: str | tuple[str, ...],
    rel: str,
    child: str | None = None,
    **kw: Any,
) -> FieldDef:
    targets = (to,) if isinstance(to, str) else to
    return _f(
        name,
        "reference",
        reference_to=targets,
        relationship_name=rel,
        child_relationship_name=child,
        **kw,
    )


def _pick(name: str, values: Iterable[str], **kw: Any) -> FieldDef:
    return _f(name, "picklist", picklist_values=tuple(values), **kw)


def _read_only(f: FieldDef) -> FieldDef:
    return dataclasses.replace(f, createable=False, updateable=False)


def _head() -> list[FieldDef]:
    return [
        _f("Id", "id", "Record ID", nillable=False, createable=False, updateable=False),
        _f("IsDeleted", "boolean", "Deleted", createable=False, updateable=False),
    ]


def _tail() -> list[FieldDef]:
    ro: dict[str, Any] = {"createable": False, "updateable": False, "nillable": False}
    return [
        _f("CreatedDate", "datetime", "Created Date", **ro),
        _ref("CreatedById", "User", "CreatedBy", label="Created By ID", **ro),
        _f("LastModifiedDate", "datetime", "Last Modified Date", **ro),
        _ref("LastModifiedById", "User", "LastModifiedBy", label="Last Modified By ID", **ro),
        _f("SystemModstamp", "datetime", "System Modstamp", **ro),
    ]


def _owner(child: str | None = None) -> FieldDef:
    return _ref("OwnerId", "User", "Owner", child, label="Owner ID", nillable=False)


def _address(prefix: str, label: str, pii: bool) -> list[FieldDef]:
    compound = f"{prefix}Address"
    ro_compound = {"createable": False, "updateable": False}
    parts = [
        _f(f"{prefix}Street", "textarea", f"{label} Street", length=255),
        _f(f"{prefix}City", "string", f"{label} City", length=40),
        _f(f"{prefix}State", "string", f"{label} State/Province", length=80),
        _f(f"{prefix}PostalCode", "string", f"{label} Zip/Postal Code", length=20),
        _f(f"{prefix}Country", "string", f"{label} Country", length=80),
        _f(f"{prefix}Latitude", "double", f"{label} Latitude", precision=18, scale=15),
        _f(f"{prefix}Longitude", "double", f"{label} Longitude", precision=18, scale=15),
    ]
    # Lead and User use the bare "Address" compound with components Street, City, ...
    parts = [
        dataclasses.replace(p, compound_field_name=compound, pii=pii, label=p.label.strip())
        for p in parts
    ]
    top = _f(compound, "address", f"{label} Address".strip(), pii=pii, **ro_compound)
    return [top, *parts]


def _person_name(salutation: bool = True) -> list[FieldDef]:
    parts = [
        _f("LastName", "string", "Last Name", length=80, nillable=False, pii=True),
        _f("FirstName", "string", "First Name", length=40, pii=True),
    ]
    if salutation:
        parts.append(_pick("Salutation", ["Mr.", "Ms.", "Mrs.", "Dr.", "Prof."], pii=True))
    parts = [dataclasses.replace(p, compound_field_name="Name") for p in parts]
    name = _f(
        "Name",
        "string",
        "Full Name",
        length=121,
        createable=False,
        updateable=False,
        calculated=True,
        name_field=True,
        pii=True,
    )
    return [*parts, name]


LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")
INDUSTRIES = (
    "Agriculture",
    "Apparel",
    "Banking",
    "Biotechnology",
    "Chemicals",
    "Communications",
    "Construction",
    "Consulting",
    "Education",
    "Electronics",
    "Energy",
    "Engineering",
    "Entertainment",
    "Environmental",
    "Finance",
    "Food & Beverage",
    "Government",
    "Healthcare",
    "Hospitality",
    "Insurance",
    "Machinery",
    "Manufacturing",
    "Media",
    "Not For Profit",
    "Recreation",
    "Retail",
    "Shipping",
    "Technology",
    "Telecommunications",
    "Transportation",
    "Utilities",
    "Other",
)
RATINGS = ("Hot", "Warm", "Cold")
ACCOUNT_TYPES = (
    "Prospect",
    "Customer - Direct",
    "Customer - Channel",
    "Channel Partner / Reseller",
    "Installation Partner",
    "Technology Partner",
    "Other",
)
OPPORTUNITY_TYPES = (
    "Existing Customer - Upgrade",
    "Existing Customer - Replacement",
    "Existing Customer - Downgrade",
    "New Customer",
)
FORECAST_CATEGORIES = ("Omitted", "Pipeline", "Best Case", "Commit", "Closed")
COMPETITORS = ("Acme Cloud", "Globex", "Initech", "Umbrella Systems", "Hooli", "None")
LEAD_STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
)
TASK_STATUSES = ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred")
TASK_PRIORITIES = ("High", "Normal", "Low")
ACTIVITY_TYPES = ("Call", "Email", "Meeting", "Other")
TIME_ZONES = (
    "America/Los_Angeles",
    "America/New_York",
    "Europe/London",
    "Europe/Paris",
    "Asia/Tokyo",
    "Australia/Sydney",
)


def _account() -> SObjectDef:
    fields = [
        *_head(),
        _ref("MasterRecordId", "Account", "MasterRecord", createable=False, updateable=False),
        _f("Name", "string", "Account Name", length=255, nillable=False, name_field=True),
        _pick("Type", ACCOUNT_TYPES, label="Account Type"),
        _ref("ParentId", "Account", "Parent", "ChildAccounts"),
        *_address("Billing", "Billing", pii=False),
        *_address("Shipping", "Shipping", pii=False),
        _f("Phone", "phone", "Account Phone"),
        _f("Fax", "phone", "Account Fax"),
        _f("AccountNumber", "string", length=40),
        _f("Website", "url"),
        _f("Sic", "string", "SIC Code", length=20),
        _pick("Industry", INDUSTRIES),
        _f("AnnualRevenue", "currency"),
        _f("NumberOfEmployees", "int", "Employees", precision=8),
        _pick("Ownership", ("Public", "Private", "Subsidiary", "Other")),
        _f("TickerSymbol", "string", length=20),
        _f("Description", "textarea", "Account Description"),
        _pick("Rating", RATINGS, label="Account Rating"),
        _f("Site", "string", "Account Site", length=80),
        _owner("Accounts"),
        *_tail(),
        _pick("AccountSource", LEAD_SOURCES),
        _pick("Customer_Tier__c", ("Tier 1", "Tier 2", "Tier 3"), label="Customer Tier"),
        _pick("SLA__c", ("Gold", "Silver", "Platinum", "Bronze"), label="SLA"),
        _f(
            "External_Account_Id__c",
            "string",
            "External Account ID",
            length=40,
            unique=True,
            external_id=True,
        ),
        _pick("Active__c", ("Yes", "No"), label="Active"),
    ]
    return SObjectDef("Account", "Account", "Accounts", KEY_PREFIXES["Account"], tuple(fields))


def _contact() -> SObjectDef:
    fields = [
        *_head(),
        _ref("MasterRecordId", "Contact", "MasterRecord", createable=False, updateable=False),
        _ref("AccountId", "Account", "Account", "Contacts", label="Account ID"),
        *_person_name(),
        *_address("Mailing", "Mailing", pii=True),
        _f("Phone", "phone", "Business Phone", pii=True),
        _f("MobilePhone", "phone", "Mobile Phone", pii=True),
        _f("Email", "email", pii=True),
        _f("Title", "string", length=128),
        _f("Department", "string", length=80),
        _pick("LeadSource", LEAD_SOURCES),
        _f("Birthdate", "date", pii=True),
        _f("Description", "textarea", "Contact Description"),
        _ref("ReportsToId", "Contact", "ReportsTo", "ReportsTo"),
        _f("HasOptedOutOfEmail", "boolean", "Email Opt Out"),
        _f("DoNotCall", "boolean", "Do Not Call"),
        _owner(),
        *_tail(),
        _pick(
            "Preferred_Language__c",
            ("English", "French", "German", "Spanish", "Japanese"),
            label="Preferred Language",
        ),
        _f("Contact_Score__c", "double", "Contact Score", precision=3, scale=0),
    ]
    return SObjectDef("Contact", "Contact", "Contacts", KEY_PREFIXES["Contact"], tuple(fields))


def _lead() -> SObjectDef:
    fields = [
        *_head(),
        _ref("MasterRecordId", "Lead", "MasterRecord", createable=False, updateable=False),
        *_person_name(),
        _f("Title", "string", length=128),
        _f("Company", "string", length=255, nillable=False),
        *_address("", "", pii=True),
        _f("Phone", "phone", pii=True),
        _f("MobilePhone", "phone", "Mobile Phone", pii=True),
        _f("Email", "email", pii=True),
        _f("Website", "url"),
        _f("Description", "textarea"),
        _pick("LeadSource", LEAD_SOURCES),
        _pick(
            "Status",
            LEAD_STATUSES,
            nillable=False,
            default_value="Open - Not Contacted",
            label="Lead Status",
        ),
        _pick("Industry", INDUSTRIES),
        _pick("Rating", RATINGS),
        _f("AnnualRevenue", "currency"),
        _f("NumberOfEmployees", "int", "Employees", precision=8),
        _owner(),
        _read_only(_f("IsConverted", "boolean", "Converted")),
        _read_only(_f("ConvertedDate", "date")),
        _read_only(_ref("ConvertedAccountId", "Account", "ConvertedAccount")),
        _read_only(_ref("ConvertedContactId", "Contact", "ConvertedContact")),
        _read_only(_ref("ConvertedOpportunityId", "Opportunity", "ConvertedOpportunity")),
        _f("IsUnreadByOwner", "boolean", "Unread By Owner"),
        *_tail(),
        _f("Lead_Score__c", "double", "Lead Score", precision=3, scale=0),
    ]
    return SObjectDef("Lead", "Lead", "Leads", KEY_PREFIXES["Lead"], tuple(fields))


def _opportunity() -> SObjectDef:
    fields = [
        *_head(),
        _ref("AccountId", "Account", "Account", "Opportunities", label="Account ID"),
        _f("IsPrivate", "boolean", "Private"),
        _f("Name", "string", length=120, nillable=False, name_field=True),
        _f("Description", "textarea"),
        _pick(
            "StageName",
            OPPORTUNITY_STAGES,
            label="Stage",
            nillable=False,
            restricted_picklist=True,
        ),
        _f("Amount", "currency"),
        _f("Probability", "percent", "Probability (%)", precision=3, scale=0),
        _f(
            "ExpectedRevenue",
            "currency",
            "Expected Amount",
            createable=False,
            updateable=False,
            calculated=True,
            formula="Amount * Probability / 100",
        ),
        _f("TotalOpportunityQuantity", "double", "Quantity", precision=18, scale=2),
        _f("CloseDate", "date", "Close Date", nillable=False),
        _pick("Type", OPPORTUNITY_TYPES, label="Opportunity Type"),
        _f("NextStep", "string", "Next Step", length=255),
        _pick("LeadSource", LEAD_SOURCES),
        _read_only(_f("IsClosed", "boolean", "Closed")),
        _read_only(_f("IsWon", "boolean", "Won")),
        _pick(
            "ForecastCategoryName",
            FORECAST_CATEGORIES,
            label="Forecast Category",
            restricted_picklist=True,
        ),
        _owner("Opportunities"),
        *_tail(),
        _read_only(_f("FiscalQuarter", "int", "Fiscal Quarter", precision=11)),
        _read_only(_f("FiscalYear", "int", "Fiscal Year", precision=11)),
        _f("Discount_Percent__c", "percent", "Discount Percent", precision=5, scale=2),
        _pick("Competitor__c", COMPETITORS, label="Competitor"),
        _f("Contract_Term_Months__c", "double", "Contract Term (Months)", precision=3, scale=0),
        _pick("Region__c", ("AMER", "EMEA", "APAC", "LATAM"), label="Region"),
        # A cross-object formula: the parent Account's Rating, evaluated by the org. When
        # the Account changes, this value changes with no event and no stamp on the
        # Opportunity (sfdc_emulator.formulas).
        _f(
            "Account_Rating__c",
            "string",
            "Account Rating",
            length=1300,
            createable=False,
            updateable=False,
            calculated=True,
            formula="TEXT(Account.Rating)",
        ),
    ]
    return SObjectDef(
        "Opportunity", "Opportunity", "Opportunities", KEY_PREFIXES["Opportunity"], tuple(fields)
    )


def _line_item() -> SObjectDef:
    fields = [
        *_head(),
        _ref(
            "OpportunityId",
            "Opportunity",
            "Opportunity",
            "OpportunityLineItems",
            label="Opportunity ID",
            nillable=False,
            updateable=False,
        ),
        _f("SortOrder", "int", "Sort Order", precision=9),
        _ref("PricebookEntryId", "PricebookEntry", "PricebookEntry", updateable=False),
        _ref("Product2Id", "Product2", "Product2", label="Product ID", updateable=False),
        _read_only(_f("ProductCode", "string", "Product Code", length=255)),
        _f("Quantity", "double", precision=12, scale=2, nillable=False),
        _f(
            "TotalPrice",
            "currency",
            "Total Price",
            calculated=True,
            formula="Quantity * UnitPrice * (1 - BLANKVALUE(Discount, 0) / 100)",
        ),
        _f("UnitPrice", "currency", "Sales Price"),
        _read_only(_f("ListPrice", "currency", "List Price")),
        _f("ServiceDate", "date", "Date"),
        _f("Discount", "percent", precision=5, scale=2),
        _f("Description", "string", "Line Description", length=255),
        *_tail(),
        _pick("Line_Type__c", ("New", "Renewal", "Upsell"), label="Line Type"),
    ]
    return SObjectDef(
        "OpportunityLineItem",
        "Opportunity Product",
        "Opportunity Product",
        KEY_PREFIXES["OpportunityLineItem"],
        tuple(fields),
    )


def _user() -> SObjectDef:
    fields = [
        *_head(),
        _f("Username", "string", length=80, nillable=False, unique=True, pii=True),
        *_person_name(salutation=False),
        _f("CompanyName", "string", "Company Name", length=80),
        _f("Division", "string", length=80),
        _f("Department", "string", length=80),
        _f("Title", "string", length=80),
        *_address("", "", pii=True),
        _f("Email", "email", nillable=False, length=128, pii=True),
        _f("Phone", "phone", pii=True),
        _f("MobilePhone", "phone", "Mobile", pii=True),
        _f("Alias", "string", length=8, nillable=False),
        _f("CommunityNickname", "string", "Nickname", length=40),
        _f("IsActive", "boolean", "Active", default_value=True),
        _pick("TimeZoneSidKey", TIME_ZONES, label="Time Zone", nillable=False),
        _pick("LocaleSidKey", ("en_US", "en_GB", "fr_FR", "de_DE", "ja_JP"), label="Locale"),
        _pick("EmailEncodingKey", ("UTF-8", "ISO-8859-1"), label="Email Encoding"),
        _pick("LanguageLocaleKey", ("en_US", "fr", "de", "ja"), label="Language"),
        _read_only(_pick("UserType", ("Standard", "AutomatedProcess"), label="User Type")),
        _ref("ManagerId", "User", "Manager", "ManagedUsers"),
        _ref("ProfileId", "Profile", "Profile", label="Profile ID"),
        _ref("UserRoleId", "UserRole", "UserRole", label="Role ID"),
        _f("EmployeeNumber", "string", length=20),
        _read_only(_f("LastLoginDate", "datetime", "Last Login")),
        *_tail(),
        _pick("Sales_Team__c", ("Enterprise", "Mid-Market", "SMB", "Partner"), label="Team"),
    ]
    return SObjectDef("User", "User", "Users", KEY_PREFIXES["User"], tuple(fields))


def _activity_common(child: str) -> list[FieldDef]:
    return [
        _ref("WhoId", ("Contact", "Lead"), "Who", child, label="Name ID"),
        _ref("WhatId", ("Account", "Opportunity"), "What", child, label="Related To ID"),
        _f("Subject", "string", length=255),
    ]


def _task() -> SObjectDef:
    fields = [
        *_head(),
        *_activity_common("Tasks"),
        _f("ActivityDate", "date", "Due Date Only"),
        _pick("Status", TASK_STATUSES, nillable=False, default_value="Not Started"),
        _pick("Priority", TASK_PRIORITIES, nillable=False, default_value="Normal"),
        _read_only(_f("IsHighPriority", "boolean", "High Priority")),
        _owner("Tasks"),
        _f("Description", "textarea"),
        _pick("Type", ACTIVITY_TYPES),
        _read_only(_f("IsClosed", "boolean", "Closed")),
        _f("CallDurationInSeconds", "int", "Call Duration", precision=8),
        _pick("CallType", ("Internal", "Inbound", "Outbound"), label="Call Type"),
        _f("CallDisposition", "string", "Call Result", length=255),
        _pick("TaskSubtype", ("Task", "Email", "Call"), label="Task Subtype", updateable=False),
        _read_only(_f("CompletedDateTime", "datetime", "Completed Date/Time")),
        _f("IsReminderSet", "boolean", "Reminder Set"),
        _f("ReminderDateTime", "datetime", "Reminder Date/Time"),
        *_tail(),
        _pick("Outcome__c", ("Connected", "Left Voicemail", "No Answer", "Meeting Booked")),
    ]
    return SObjectDef("Task", "Task", "Tasks", KEY_PREFIXES["Task"], tuple(fields))


def _event() -> SObjectDef:
    fields = [
        *_head(),
        *_activity_common("Events"),
        _f("Location", "string", length=255),
        _f("IsAllDayEvent", "boolean", "All-Day Event"),
        _f("ActivityDateTime", "datetime", "Due Date Time"),
        _read_only(_f("ActivityDate", "date", "Due Date Only")),
        _f("DurationInMinutes", "int", "Duration", precision=8),
        _f("StartDateTime", "datetime", "Start Date Time"),
        _read_only(_f("EndDateTime", "datetime", "End Date Time")),
        _f("Description", "textarea"),
        _owner("Events"),
        _pick("Type", ACTIVITY_TYPES),
        _f("IsPrivate", "boolean", "Private"),
        _pick("ShowAs", ("Busy", "OutOfOffice", "Free"), label="Show Time As"),
        _pick("EventSubtype", ("Event",), label="Event Subtype", updateable=False),
        *_tail(),
        _pick(
            "Meeting_Outcome__c",
            ("Held", "No Show", "Rescheduled", "Cancelled"),
            label="Meeting Outcome",
        ),
    ]
    return SObjectDef("Event", "Event", "Events", KEY_PREFIXES["Event"], tuple(fields))


DEFAULT_OBJECTS: tuple[SObjectDef, ...] = (
    _account(),
    _contact(),
    _lead(),
    _opportunity(),
    _line_item(),
    _user(),
    _task(),
    _event(),
)


def default_catalog() -> dict[str, SObjectDef]:
    """A fresh ``{name: SObjectDef}`` of the default objects."""
    return {spec.name: spec for spec in DEFAULT_OBJECTS}
