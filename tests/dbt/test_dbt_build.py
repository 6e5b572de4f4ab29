"""The real dbt project on a warehouse the real engine built: models, tests, marts' numbers.

One warehouse and one `dbt build` per module (dbt invocations cost seconds): the org is
backfilled, then, through the engine as CDC would deliver them, an open opportunity is
won with a new amount, a won opportunity and a task are deleted; then dbt builds.
"""

import datetime as dt
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from sync_engine import changes as ch
from tests.dbt.harness import (
    ANCHOR,
    apply,
    build_org_warehouse,
    columns,
    engine,
    once,
    query,
    run_dbt,
)

pytestmark = pytest.mark.xdist_group("dbt")

# After every generated SystemModstamp (all < ANCHOR), in Salesforce commit time.
WON_AT = ANCHOR + dt.timedelta(minutes=30)
DELETED_AT = ANCHOR + dt.timedelta(minutes=45)
NEW_AMOUNT = Decimal("123456.78")


def _cdc(spec, record_id, change_type, at, values=None, uuid=""):
    values = values or {}
    return ch.cdc_change(
        spec,
        event_uuid=f"{change_type}-{record_id}-{uuid}",
        record_id=record_id,
        change_type=change_type,
        commit_ms=ch.ms_of(at),
        transaction_key=f"tx-{record_id}-{uuid}",
        sequence_number=1,
        values=values,
        changed_fields=list(values),
    )


def _won(amount: Decimal) -> dict:
    return {"StageName": "Closed Won", "IsWon": True, "IsClosed": True, "Amount": amount}


@pytest.fixture(scope="module")
def org(tmp_path_factory):
    return once("dbt_build", lambda: _build_and_run_dbt(tmp_path_factory))


def _build_and_run_dbt(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("dbt_build")
    path = base / "warehouse.duckdb"
    built = build_org_warehouse(path, base / "org")
    opps = built["truth"]["Opportunity"]
    live_open = [o for o in opps if not o["IsClosed"] and not o["IsDeleted"] and o["Amount"]]
    won = [o for o in opps if o["IsWon"] and not o["IsDeleted"]]
    tasks = [t for t in built["truth"]["Task"] if not t["IsDeleted"]]
    line_items = built["truth"]["OpportunityLineItem"]
    picked = {
        "updated": live_open[0],
        "later_won": live_open[1],
        "deleted": won[0],
        "deleted_task": tasks[0],
    }
    specs = built["specs"]
    with engine(path) as wh:
        apply(
            wh,
            specs["Opportunity"],
            [
                _cdc(
                    specs["Opportunity"],
                    picked["updated"]["Id"],
                    "UPDATE",
                    WON_AT,
                    _won(NEW_AMOUNT),
                ),
                _cdc(specs["Opportunity"], picked["deleted"]["Id"], "DELETE", DELETED_AT),
            ],
        )
        # Salesforce deletes an opportunity's line items with it.
        lines = specs["OpportunityLineItem"]
        apply(
            wh,
            lines,
            [
                _cdc(lines, li["Id"], "DELETE", DELETED_AT)
                for li in line_items
                if li["OpportunityId"] == picked["deleted"]["Id"]
            ],
        )
        task = specs["Task"]
        apply(wh, task, [_cdc(task, picked["deleted_task"]["Id"], "DELETE", DELETED_AT)])
    run = run_dbt(["build"], path, base / "dbt")
    return {"path": path, "run": run, "picked": picked, "specs": specs, "base": base}


def _as_of(path: Path, opportunity_id: str, at: dt.datetime) -> list[tuple]:
    """The documented "as of" filter (docs/dbt.md) on fct_opportunity_history."""
    return query(
        path,
        "select stage_name, amount, is_deleted from marts.fct_opportunity_history "
        "where opportunity_id = ? and valid_from <= ? and (valid_to is null or valid_to > ?)",
        [opportunity_id, at, at],
    )


def _amount(value) -> Decimal:
    return Decimal(repr(float(value))).quantize(Decimal("0.01"))


def test_every_model_builds_and_every_dbt_test_passes(org):
    run = org["run"]
    assert run.returncode == 0, run.stdout[-4000:]
    models = run.by_status("model")
    assert len(models) == 22
    assert set(models.values()) == {"success"}
    tests = run.by_status("test")
    assert len(tests) >= 40
    assert set(tests.values()) == {"pass"}, {k: v for k, v in tests.items() if v != "pass"}


def test_commission_preview_equals_the_closed_won_live_opportunities_in_current(org):
    path, picked = org["path"], org["picked"]
    expected = query(
        path,
        "select id, amount, ownerid, accountid, closedate from sfdc.opportunity "
        "where iswon and not is_deleted order by id",
    )
    actual = query(
        path,
        "select opportunity_id, amount, owner_id, account_id, close_date "
        "from marts.commission_preview order by opportunity_id",
    )
    assert actual == expected
    assert len(actual) >= 2
    won_now = {row[0]: row[1] for row in actual}
    assert won_now[picked["updated"]["Id"]] == NEW_AMOUNT
    assert picked["deleted"]["Id"] not in won_now


def test_opportunity_history_as_of_returns_the_version_valid_at_that_instant(org):
    path, opp = org["path"], org["picked"]["updated"]
    second = dt.timedelta(seconds=1)
    assert _as_of(path, opp["Id"], WON_AT - second) == [
        (opp["StageName"], _amount(opp["Amount"]), False)
    ]
    # valid_from is inclusive: at the commit instant the new version holds.
    assert _as_of(path, opp["Id"], WON_AT) == [("Closed Won", NEW_AMOUNT, False)]
    assert _as_of(path, opp["Id"], WON_AT + dt.timedelta(days=30)) == [
        ("Closed Won", NEW_AMOUNT, False)
    ]
    assert _as_of(path, opp["Id"], opp["CreatedDate"] - dt.timedelta(days=1)) == []


def test_opportunity_as_of_macro_returns_live_versions_only(org):
    path, picked = org["path"], org["picked"]
    before, after = "2025-01-15 00:29:59", "2025-01-15 00:50:00"
    inline = " union all ".join(
        f"select '{at}' as as_of, opportunity_id, stage_name, amount "
        f"from ({{{{ sfdc_sync.opportunity_as_of('{at}') }}}}) as v"
        for at in (before, after)
    )
    run = run_dbt(["compile", "--quiet", "--inline", inline], path, org["base"] / "as_of")
    assert run.returncode == 0, run.stdout
    results: dict[str, dict] = {before: {}, after: {}}
    for as_of, opportunity_id, stage, amount in query(path, run.stdout):
        results[as_of][opportunity_id] = (stage, amount)
    updated, deleted = picked["updated"], picked["deleted"]
    assert results[before][updated["Id"]] == (updated["StageName"], _amount(updated["Amount"]))
    assert results[after][updated["Id"]] == ("Closed Won", NEW_AMOUNT)
    assert deleted["Id"] in results[before]
    assert deleted["Id"] not in results[after]


def test_fct_pipeline_totals_equal_the_open_live_opportunities(org):
    path = org["path"]
    expected = query(
        path,
        "select count(*), sum(amount) from sfdc.opportunity where not isclosed and not is_deleted",
    )
    actual = query(
        path,
        "select sum(opportunity_count), sum(pipeline_amount), count(quota_amount), "
        "count(pipeline_coverage) from marts.fct_pipeline",
    )
    assert actual == [(*expected[0], 0, 0)]


def test_account_activity_counts_each_live_activity_on_its_account(org):
    path = org["path"]
    accounts = {r[0] for r in query(path, "select id from sfdc.account where not is_deleted")}
    opp_account = dict(
        query(path, "select id, accountid from sfdc.opportunity where not is_deleted")
    )
    contact_account = dict(
        query(path, "select id, accountid from sfdc.contact where not is_deleted")
    )
    expected: dict[tuple[str, str], int] = {}
    for kind in ("task", "event"):
        for what_id, who_id in query(
            path, f"select whatid, whoid from sfdc.{kind} where not is_deleted"
        ):
            account = (
                (what_id if what_id in accounts else None)
                or opp_account.get(what_id)
                or contact_account.get(who_id)
            )
            if account is not None:
                expected[(account, kind)] = expected.get((account, kind), 0) + 1
    actual = {}
    for account, tasks, events in query(
        path, "select account_id, task_count, event_count from marts.fct_account_activity"
    ):
        if tasks:
            actual[(account, "task")] = tasks
        if events:
            actual[(account, "event")] = events
    assert actual == expected
    assert sum(expected.values()) > 0


def test_legacy_opportunity_exposes_the_salesforce_column_names(org):
    path, updated = org["path"], org["picked"]["updated"]
    cols = columns(path, "legacy.OPPORTUNITY")
    assert cols[:2] == ["Id", "IsDeleted"]
    assert {
        "AccountId",
        "Amount",
        "CloseDate",
        "IsWon",
        "OwnerId",
        "StageName",
        "SystemModstamp",
        "Discount_Percent__c",
        "Region__c",
    } <= set(cols)
    assert query(
        path, "select Id, StageName, Amount from legacy.OPPORTUNITY where Id = ?", [updated["Id"]]
    ) == [(updated["Id"], "Closed Won", NEW_AMOUNT)]
    legacy = query(
        path,
        "select table_name from information_schema.tables where table_schema = 'legacy' "
        "order by table_name",
    )
    assert [r[0] for r in legacy] == [
        "ACCOUNT",
        "CONTACT",
        "EVENT",
        "LEAD",
        "OPPORTUNITY",
        "OPPORTUNITYLINEITEM",
        "TASK",
        "USER",
    ]


def test_deleted_records_drop_out_of_staging_marts_and_legacy_views(org):
    path, picked = org["path"], org["picked"]
    opp_id, task_id = picked["deleted"]["Id"], picked["deleted_task"]["Id"]
    assert query(path, "select is_deleted from sfdc.opportunity where id = ?", [opp_id]) == [
        (True,)
    ]
    for relation, column, record_id in (
        ("staging.stg_salesforce__opportunity", "opportunity_id", opp_id),
        ("marts.commission_preview", "opportunity_id", opp_id),
        (
            "marts.fct_pipeline f join staging.stg_salesforce__opportunity o "
            "on f.owner_id = o.owner_id",
            "o.opportunity_id",
            opp_id,
        ),
        ("legacy.OPPORTUNITY", "Id", opp_id),
        ("staging.stg_salesforce__opportunity_line_item", "opportunity_id", opp_id),
        ("staging.stg_salesforce__task", "task_id", task_id),
        ("legacy.TASK", "Id", task_id),
    ):
        sql = f"select count(*) from {relation} where {column} = ?"
        assert query(path, sql, [record_id]) == [(0,)], relation
    # History keeps the delete: the opportunity's open version is a deleted one.
    assert query(
        path,
        "select is_deleted, valid_from from marts.fct_opportunity_history "
        "where opportunity_id = ? and is_current",
        [opp_id],
    ) == [(True, DELETED_AT)]


def _copy(org, name: str) -> Path:
    """A private copy of the built warehouse, for a test that changes it.

    Same file name in another folder: DuckDB names the catalog after the file, and the
    views dbt created refer to it.
    """
    copy = org["base"] / name / org["path"].name
    copy.parent.mkdir()
    shutil.copyfile(org["path"], copy)
    return copy


def test_fct_pipeline_fills_coverage_when_a_quota_source_is_enabled(org):
    path = _copy(org, "with_quota")
    with engine(path) as wh:
        wh.execute("create schema if not exists revenue_ops")
        wh.execute(
            "create or replace table revenue_ops.quota as "
            "select owner_id, close_month as quota_month, "
            "2 * sum(pipeline_amount) as quota_amount from marts.fct_pipeline group by 1, 2"
        )
    run = run_dbt(
        ["build", "--select", "fct_pipeline", "--vars", "{quota_enabled: true}"],
        path,
        path.parent / "dbt",
    )
    assert run.returncode == 0, run.stdout[-4000:]
    coverage = query(
        path,
        "select distinct quota_amount = 0, pipeline_coverage from marts.fct_pipeline order by 1",
    )
    # A zero quota gives no ratio rather than a division error.
    assert set(coverage) <= {(False, 0.5), (True, None)}
    assert (False, 0.5) in coverage
    # That build was incremental (fct_pipeline existed without a quota): the owners whose
    # quota differs from the mart's were rebuilt, as a full refresh would.
    mart = "select * exclude (built_at) from marts.fct_pipeline order by all"
    incremental = query(path, mart)
    run = run_dbt(
        ["build", "--select", "fct_pipeline", "--full-refresh", "--vars", "{quota_enabled: true}"],
        path,
        path.parent / "dbt_full",
    )
    assert run.returncode == 0, run.stdout[-4000:]
    assert query(path, mart) == incremental


def test_commission_preview_shows_a_deal_won_after_the_build_without_a_rebuild(org):
    path, opp = _copy(org, "won_later"), org["picked"]["later_won"]
    spec = org["specs"]["Opportunity"]
    amount = Decimal("999.00")
    with engine(path) as wh:
        apply(wh, spec, [_cdc(spec, opp["Id"], "UPDATE", WON_AT, _won(amount), uuid="late")])
    assert query(
        path,
        "select amount from marts.commission_preview where opportunity_id = ?",
        [opp["Id"]],
    ) == [(amount,)]
