"""PII masking: DuckDB masked views over real engine tables, Snowflake policy DDL.

DuckDB runs for real on a file. Snowflake: fakesnow cannot execute masking policies
(parse errors, reference/snowflake.md B2), so the policy statements are checked for their
shape and with sqlglot (the `->` body parsed as a real Snowflake expression), and the
ledger logic (what is issued on a second run) runs through fakesnow with the policy DDL
captured instead of executed.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import fakesnow
import pytest
import sqlglot
from sqlglot import exp

from resources.duckdb_warehouse import DuckDBWarehouse
from resources.landing import LandingStore
from resources.snowflake_warehouse import SnowflakeWarehouse
from sync_engine import changes as ch
from sync_engine import masking, registry
from sync_engine.masking import MaskingConfigError, apply_masking
from sync_engine.spec import FieldSpec, ObjectSpec
from sync_engine.warehouse import InvalidIdentifierError
from tests.sync_engine.contacts import (
    PII,
    SPEC,
    contact_id,
    create,
    land_and_apply,
    quarantine,
    update_title,
    values,
)

pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def loaded(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    """A DuckDB file with three contacts put through the engine, one quarantined row."""
    wh = DuckDBWarehouse(path=str(tmp_path / "wh.duckdb"))
    landing = LandingStore(str(tmp_path / "landing"))
    spec = registry.sync_schema(wh, SPEC).spec
    land_and_apply(wh, landing, [create(1), create(2), create(3)], "cdc-a")
    land_and_apply(wh, landing, [update_title(1, 1)], "cdc-b")
    quarantine(wh, [2])
    apply_masking(wh, spec, PII)
    yield wh
    wh.close()


def rows(wh: DuckDBWarehouse, sql: str) -> list[dict]:
    return wh.query_arrow(sql).to_pylist()


def test_masked_current_view_hashes_text_pii_nulls_other_pii_and_passes_the_rest(loaded):
    masked = {r["id"]: r for r in rows(loaded, "SELECT * FROM sfdc_masked.contact")}
    clear = {r["id"]: r for r in rows(loaded, "SELECT * FROM sfdc.contact")}
    assert masked.keys() == clear.keys() == {contact_id(n) for n in (1, 2, 3)}
    one = masked[contact_id(1)]
    assert one["email"] == sha("person1@example.com")
    assert one["firstname"] == sha("First1") and one["phone"] == sha(values(1)["Phone"])
    assert one["birthdate"] is None  # a date is masked by NULL, not by a hash
    for col in ("id", "title", "accountid", "is_deleted", "_version", "_source", "_synced_at"):
        assert one[col] == clear[contact_id(1)][col]
    assert one["title"] == "Updated1"
    assert list(masked[contact_id(1)]) == list(clear[contact_id(1)])  # same columns, same order


def test_masked_values_still_join_and_count_like_the_clear_ones(loaded):
    distinct = loaded.query("SELECT COUNT(DISTINCT email) FROM sfdc_masked.contact")[0][0]
    joined = loaded.query(
        "SELECT COUNT(*) FROM sfdc_masked.contact m JOIN sfdc_history_masked.contact h "
        "ON h.email = m.email AND h.is_current"
    )[0][0]
    assert distinct == 3 and joined == 3


def test_masked_history_raw_and_quarantine_hide_pii_and_payloads(loaded):
    history = rows(loaded, "SELECT * FROM sfdc_history_masked.contact ORDER BY id, valid_from")
    assert len(history) == 4  # contact 1 has two versions
    clear = rows(loaded, "SELECT * FROM sfdc_history.contact ORDER BY id, valid_from")
    assert [(r["id"], r["valid_from"], r["title"]) for r in history] == [
        (r["id"], r["valid_from"], r["title"]) for r in clear
    ]
    assert [r["email"] for r in history] == [sha(r["email"]) for r in clear]
    raw = rows(loaded, "SELECT * FROM sfdc_raw_masked.contact")
    assert len(raw) == 4 and all(r["payload"] is None for r in raw)
    assert {r["record_id"] for r in raw} == {contact_id(n) for n in (1, 2, 3)}
    assert all(r["lastname"] is None or len(r["lastname"]) == 64 for r in raw)
    quarantined = rows(loaded, "SELECT * FROM sfdc_quarantine_masked.contact")
    assert [(r["record_id"], r["reason"], r["payload"]) for r in quarantined] == [
        (contact_id(2), "Email: not an email", None)
    ]
    text = str(rows(loaded, "SELECT * FROM sfdc_raw_masked.contact")) + str(history)
    for n in (1, 2, 3):
        assert values(n)["Email"] not in text and values(n)["FirstName"] not in text


def test_no_clear_pii_is_readable_from_any_masked_view(loaded):
    views = [
        f"{r[0]}.{r[1]}"
        for r in loaded.query(
            "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal"
        )
    ]
    assert sorted(views) == [
        "sfdc_history_masked.contact",
        "sfdc_masked.contact",
        "sfdc_quarantine_masked.contact",
        "sfdc_raw_masked.contact",
    ]
    for view in views:
        dump = str(rows(loaded, f"SELECT * FROM {view}"))
        for n in (1, 2, 3):
            for field in ("FirstName", "LastName", "Email", "Phone"):
                assert values(n)[field] not in dump, (view, field)
            assert repr(values(n)["Birthdate"]) not in dump


def test_a_pii_field_added_later_is_masked_after_the_next_run(loaded, tmp_path):
    landing = LandingStore(str(tmp_path / "landing"))
    wider = ObjectSpec(SPEC.name, (*SPEC.fields, FieldSpec("MobilePhone", "phone")))
    spec = registry.sync_schema(loaded, wider).spec
    # Before masking runs again the new column is not in the view at all: it cannot leak.
    assert "mobilephone" not in rows(loaded, "SELECT * FROM sfdc_masked.contact LIMIT 1")[0]
    mobile = ch.cdc_change(
        spec,
        event_uuid="create-4",
        record_id=contact_id(4),
        change_type="CREATE",
        commit_ms=1_717_200_009_000,
        replay_id=99,
        values={**values(4), "MobilePhone": "+15559999999"},
    )
    land_and_apply(loaded, landing, [mobile], "cdc-c", spec=spec)
    result = apply_masking(loaded, spec, PII)
    assert "mobilephone" in result.pii_columns
    got = loaded.query("SELECT mobilephone FROM sfdc_masked.contact WHERE id = ?", [contact_id(4)])[
        0
    ][0]
    assert got == sha("+15559999999")
    # A non-PII field added later passes through in clear.
    wider2 = ObjectSpec(SPEC.name, (*spec.fields, FieldSpec("Department", "string")))
    spec2 = registry.sync_schema(loaded, wider2).spec
    apply_masking(loaded, spec2, PII)
    assert "department" in rows(loaded, "SELECT * FROM sfdc_masked.contact LIMIT 1")[0]


def test_apply_masking_is_idempotent_and_an_object_without_pii_passes_through(tmp_path):
    wh = DuckDBWarehouse(path=str(tmp_path / "wh.duckdb"))
    landing = LandingStore(str(tmp_path / "landing"))
    spec = registry.sync_schema(wh, SPEC).spec
    land_and_apply(wh, landing, [create(1)], "cdc-a")
    first = apply_masking(wh, spec, [])
    again = apply_masking(wh, spec, [])
    assert first.views == again.views and first.statements == 12
    assert again.statements == 0  # unchanged views are not recreated
    assert rows(wh, "SELECT * FROM sfdc_masked.contact") == rows(wh, "SELECT * FROM sfdc.contact")
    raw = rows(wh, "SELECT payload FROM sfdc_raw_masked.contact")
    assert raw[0]["payload"] is not None  # no PII configured: nothing to hide
    wh.close()


def test_masking_refuses_a_pii_field_that_is_not_an_identifier(loaded):
    with pytest.raises(InvalidIdentifierError):
        apply_masking(loaded, SPEC, ['Email"; DROP TABLE sfdc.contact; --'])


ROLES = ("PII_READER", "SFDC_LOADER")
_numbers = itertools.count()


def _expression_after_arrow(statement: str) -> exp.Expression:
    body = statement.split("->", 1)[1].strip()
    return sqlglot.parse_one(body, read="snowflake", error_level=sqlglot.ErrorLevel.RAISE)


def _snowflake_desired(pii=PII) -> list[masking.ColumnPolicy]:
    wh = SnowflakeWarehouse(account="a", user="u", password="p", database="d", role="loader")
    return masking.desired_policies(wh, SPEC, pii, ROLES)


def test_snowflake_policies_exempt_reader_and_loader_and_mask_by_type():
    desired = _snowflake_desired()
    by_target = {c.target: c.policy for c in desired}
    assert by_target["sfdc.contact.email"].name == "sfdc_pii_text"
    assert by_target["sfdc.contact.birthdate"].name == "sfdc_pii_date"
    assert by_target["sfdc_raw.contact.payload"].name == "sfdc_pii_variant"
    assert by_target["sfdc_quarantine.contact.payload"].name == "sfdc_pii_variant"
    assert "sfdc.contact.title" not in by_target and "sfdc.contact.name" not in by_target
    layers = {t.rsplit(".", 2)[0] for t in by_target if t.endswith(".email")}
    assert layers == {"sfdc_raw", "sfdc", "sfdc_history"}
    text = by_target["sfdc.contact.email"]
    case = _expression_after_arrow(f"x -> {text.body}")
    assert isinstance(case, exp.Case)
    roles = sorted(
        a.sql()
        for f in case.find_all(exp.Anonymous)
        if f.name.upper() == "IS_ROLE_IN_SESSION"
        for a in f.expressions
    )
    assert roles == ["'PII_READER'", "'SFDC_LOADER'"]
    assert case.args["default"].sql(dialect="snowflake") == "SHA2(val, 256)"
    date_case = _expression_after_arrow(f"x -> {by_target['sfdc.contact.birthdate'].body}")
    assert isinstance(date_case.args["default"], exp.Null)


def test_snowflake_statements_parse_and_quote_every_identifier():
    statements, to_set, _ = masking.snowflake_statements(
        _snowflake_desired(), {}, "sfdc_meta", [("sfdc", "contact")]
    )
    creates = [s for s in statements if s.startswith("CREATE MASKING POLICY IF NOT EXISTS")]
    bodies = [s for s in statements if s.startswith("ALTER MASKING POLICY")]
    alters = [s for s in statements if s.startswith("ALTER TABLE")]
    assert len(creates) == len(bodies) == 3  # text, date, variant
    assert len(alters) == len(to_set) == 3 * 5 + 2  # 5 PII columns in 3 layers + 2 payloads
    create_re = re.compile(
        r'^CREATE MASKING POLICY IF NOT EXISTS "SFDC_META"\."SFDC_PII_[A-Z_0-9]+" '
        r"AS \(val (VARCHAR|DATE|VARIANT)\) RETURNS \1 -> CASE WHEN .+ THEN val ELSE .+ END$"
    )
    alter_re = re.compile(
        r'^ALTER TABLE "SFDC(_RAW|_HISTORY|_QUARANTINE)?"\."CONTACT" MODIFY COLUMN "[A-Z]+" '
        r'SET MASKING POLICY "SFDC_META"\."SFDC_PII_[A-Z]+" FORCE$'
    )
    assert all(create_re.match(s) for s in creates), creates
    assert all(alter_re.match(s) for s in alters), alters
    for statement in statements:
        # sqlglot has no grammar for policy DDL: it tokenizes the statement (quotes and
        # parentheses balanced) and falls back to a Command; the body parses for real.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = sqlglot.parse_one(statement, read="snowflake")
        assert parsed is not None
        if "->" in statement:
            _expression_after_arrow(statement)


def test_snowflake_masking_needs_the_loader_role():
    wh = SnowflakeWarehouse(account="a", user="u", password="p", database="d")
    with pytest.raises(MaskingConfigError, match="SNOWFLAKE_ROLE"):
        masking.snowflake_roles(wh, "PII_READER")


def test_role_names_are_validated_before_they_reach_a_policy_body():
    with pytest.raises(InvalidIdentifierError):
        masking.policy_for(None, ["PII') OR TRUE OR ('"])


def test_row_access_hook_statements_parse():
    rule = masking.RowAccessRule(
        "sfdc_region_rows",
        "MailingCountry",
        "VARCHAR",
        "IS_ROLE_IN_SESSION('PII_READER') OR EXISTS (SELECT 1 FROM gov.region_map m "
        "WHERE m.role = CURRENT_ROLE() AND m.region = mailingcountry)",
    )
    statements = masking.row_access_statements(rule, "sfdc_meta", "sfdc", "contact")
    assert statements[2] == (
        'ALTER TABLE "SFDC"."CONTACT" ADD ROW ACCESS POLICY "SFDC_META"."SFDC_REGION_ROWS" '
        'ON ("MAILINGCOUNTRY")'
    )
    for statement in statements[:2]:
        _expression_after_arrow(statement)


class CapturingSnowflake(SnowflakeWarehouse):
    """fakesnow for everything but policy DDL, which it records instead (fakesnow cannot
    parse it)."""

    def execute(self, sql: str, params: list | tuple | None = None) -> int:
        if "MASKING POLICY" in sql or "ROW ACCESS POLICY" in sql:
            self.__dict__.setdefault("_captured", []).append(sql)
            return 0
        return super().execute(sql, params)

    @property
    def captured(self) -> list[str]:
        return self.__dict__.setdefault("_captured", [])


@pytest.fixture
def fake_snowflake() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with fakesnow.patch():
            yield


def test_snowflake_second_run_issues_no_policy_ddl_and_new_pii_is_set(fake_snowflake):
    wh = CapturingSnowflake(
        account="fake",
        user="fake",
        password="snow",
        database=f"PIITEST{next(_numbers)}",
        role="SFDC_LOADER",
    )
    spec = registry.sync_schema(wh, SPEC).spec
    apply_masking(wh, spec, PII, reader_role="PII_READER")
    first = list(wh.captured)
    assert len([s for s in first if s.startswith("ALTER TABLE")]) == 17
    wh.captured.clear()
    apply_masking(wh, spec, PII, reader_role="PII_READER")
    assert wh.captured == []  # the ledger says everything is in place
    wider = ObjectSpec(SPEC.name, (*spec.fields, FieldSpec("MobilePhone", "phone")))
    spec = registry.sync_schema(wh, wider).spec
    apply_masking(wh, spec, PII, reader_role="PII_READER")
    assert sorted(wh.captured) == sorted(
        f'ALTER TABLE "{s}"."CONTACT" MODIFY COLUMN "MOBILEPHONE" SET MASKING POLICY '
        '"SFDC_META"."SFDC_PII_TEXT" FORCE'
        for s in ("SFDC_RAW", "SFDC", "SFDC_HISTORY")
    )
    wh.captured.clear()
    # A field no longer configured as PII is unset; a changed reader role rewrites bodies.
    apply_masking(wh, spec, [p for p in PII if p != "Phone"], reader_role="DATA_STEWARD")
    unset = [s for s in wh.captured if "UNSET" in s]
    assert len(unset) == 3 and all('"PHONE"' in s for s in unset)
    assert any(s.startswith("ALTER MASKING POLICY") and "DATA_STEWARD" in s for s in wh.captured)
    wh.captured.clear()
    apply_masking(wh, spec, [p for p in PII if p != "Phone"], reader_role="DATA_STEWARD")
    assert wh.captured == []
    wh.close()


def test_every_configured_pii_field_is_masked_on_the_emulator_describe_or_is_a_parent():
    # A typo in objects.yaml would silently mask nothing: every configured field must be a
    # column of the engine spec built from describe, or a compound parent (a person's Name,
    # not synced: its components are, and they are masked).
    from sfdc_assets.objects import OBJECTS_FILE, parse_config
    from sfdc_emulator.describe import DEFAULT_OBJECTS

    describes = {o.name: o.describe_json("62.0") for o in DEFAULT_OBJECTS}
    for obj in parse_config(OBJECTS_FILE.read_text()).objects:
        body = describes[obj.name]
        spec = ObjectSpec.from_describe(body)
        parents = {f.get("compoundFieldName") for f in body["fields"]} - {None}
        masked = masking.pii_columns(spec, obj.pii_fields)
        for name in obj.pii_fields:
            assert name.lower() in masked or name in parents, (obj.name, name)
