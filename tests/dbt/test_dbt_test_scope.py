"""Frequent builds test recent rows only, the nightly build every row (issue 11 item 4).

`unique` on stg_salesforce__task.task_id and the other key tests ran over whole tables
on every 5-minute build. With `--vars '{recent_days: N}'` (macros/test_scope.sql) a test
reads the rows written in the last N days; with 0 (the default, the nightly build) all.
Here two broken facts are planted 3 days in the past (an opportunity whose account never
arrived, a second open scd2 version); the recent build does not read them, the full one
fails on both; a fresh broken fact fails the recent build too. The relationships test is
nightly only (`where: __nightly__`: its parent side is a whole-table read), so a fresh
orphan is the nightly build's to find, and the recent build reads no row of it.
"""

import datetime as dt
from decimal import Decimal

import pytest

from tests.dbt.harness import apply, create_tables, engine, once, run_dbt, snapshot_rows

pytestmark = pytest.mark.xdist_group("dbt")

MODSTAMP = dt.datetime(2025, 1, 10, 12, 0, 0)
USER = "005000000000001AAA"
ACCOUNT = "001000000000001AAA"
MISSING_ACCOUNT = "001000000000999AAA"
OLD_ORPHAN, GOOD, NEW_ORPHAN = (f"00600000000000{n}AAA" for n in (1, 2, 3))
RELATIONSHIP = "relationships_late_tolerant_stg_salesforce__opportunity_account_id"
SCD2 = "at_most_one_current_stg_salesforce__opportunity_history"
RECENT = ["--vars", "{recent_days: 2}"]


def _opportunity(record_id: str, account_id: str) -> dict:
    return {
        "Id": record_id,
        "Name": f"Deal {record_id[-4:]}",
        "AccountId": account_id,
        "OwnerId": USER,
        "StageName": "Prospecting",
        "Amount": Decimal("1000.00"),
        "CloseDate": dt.date(2025, 3, 31),
        "IsClosed": False,
        "IsWon": False,
        "SystemModstamp": MODSTAMP,
        "CreatedDate": MODSTAMP,
    }


def _plant(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("dbt_scope")
    path = base / "warehouse.duckdb"
    three_days_ago = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=3)
    with engine(path) as wh:
        specs = create_tables(wh)
        user = [{"Id": USER, "Name": "Rep", "IsActive": True, "SystemModstamp": MODSTAMP}]
        apply(wh, specs["User"], snapshot_rows(specs["User"], user))
        account = [{"Id": ACCOUNT, "Name": "Acme", "OwnerId": USER, "SystemModstamp": MODSTAMP}]
        apply(wh, specs["Account"], snapshot_rows(specs["Account"], account))
        opp = specs["Opportunity"]
        old = [_opportunity(OLD_ORPHAN, MISSING_ACCOUNT), _opportunity(GOOD, ACCOUNT)]
        apply(wh, opp, snapshot_rows(opp, old), now=three_days_ago)
        wh.execute(
            "insert into sfdc_history.opportunity by name "
            "select * replace (valid_from + interval 1 second as valid_from) "
            "from sfdc_history.opportunity where id = ?",
            [GOOD],
        )
    recent = run_dbt(["build", "--select", "staging", *RECENT], path, base / "recent")
    full = run_dbt(["build", "--select", "staging"], path, base / "full")
    # Facts broken now, outside the late-arrival window's tolerance (window 0): an orphan
    # and a second open version of it.
    with engine(path) as wh:
        apply(wh, opp, snapshot_rows(opp, [_opportunity(NEW_ORPHAN, MISSING_ACCOUNT)]))
        wh.execute(
            "insert into sfdc_history.opportunity by name "
            "select * replace (valid_from + interval 1 second as valid_from) "
            "from sfdc_history.opportunity where id = ?",
            [NEW_ORPHAN],
        )
    window = ["--vars", "{recent_days: 2, late_arrival_window_minutes: -1}"]
    fresh = run_dbt(["build", "--select", "staging", *window], path, base / "fresh")
    nightly = ["--vars", "{late_arrival_window_minutes: -1}"]
    night = run_dbt(["build", "--select", "staging", *nightly], path, base / "nightly")
    return {"recent": recent, "full": full, "fresh": fresh, "nightly": night}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return once("dbt_scope", lambda: _plant(tmp_path_factory))


def test_a_recent_build_does_not_read_facts_written_days_ago(runs):
    recent = runs["recent"]
    assert recent.returncode == 0, recent.stdout[-3000:]
    assert recent.failures(RELATIONSHIP) == ("pass", 0)
    assert recent.failures(SCD2) == ("pass", 0)


def test_the_full_build_reads_every_row_and_fails_on_both(runs):
    full = runs["full"]
    assert full.returncode != 0
    assert full.failures(RELATIONSHIP) == ("fail", 1)
    assert full.failures(SCD2) == ("fail", 1)


def test_a_recent_build_still_fails_on_a_fact_broken_recently(runs):
    # Only the new duplicate is read: the one planted 3 days ago stays outside the window.
    assert runs["fresh"].failures(SCD2) == ("fail", 1)


def test_a_nightly_only_test_reads_no_row_on_a_recent_build(runs):
    assert runs["fresh"].failures(RELATIONSHIP) == ("pass", 0)


def test_the_nightly_build_finds_every_orphan_old_and_new(runs):
    assert runs["nightly"].failures(RELATIONSHIP) == ("fail", 2)
    assert runs["nightly"].failures(SCD2) == ("fail", 2)


def test_a_fresh_platforms_first_revenue_build_passes_before_any_other_domain_built(
    tmp_path,
):
    # Seen in `make bench-scale`: the first revenue build of a fresh platform ran before
    # any people build and failed on `stg_salesforce__user` (read by fct_pipeline,
    # commission_preview and the owners' relationships tests). A domain build now also
    # creates the dbt models its models read (`+tag:`, as sfdc_assets.dbt_schedules
    # `domain_selection`), and a relationships test whose other side is not built yet
    # compares nothing (the nightly build, which builds everything, compares).
    path = tmp_path / "warehouse.duckdb"
    with engine(path) as wh:
        specs = create_tables(wh)
        opp = specs["Opportunity"]
        apply(wh, opp, snapshot_rows(opp, [_opportunity(GOOD, ACCOUNT)]))
    first = run_dbt(["build", "--select", "+tag:revenue", *RECENT], path, tmp_path / "revenue")
    assert first.returncode == 0, first.stdout[-3000:]
    assert first.failures(RELATIONSHIP) == ("pass", 0)

    fresh = tmp_path / "fresh.duckdb"
    with engine(fresh) as wh:
        create_tables(wh)
    built = run_dbt(["run", "--select", "stg_salesforce__account"], fresh, tmp_path / "a")
    assert built.returncode == 0, built.stdout[-3000:]
    owners = "relationships_late_tolerant_stg_salesforce__account_owner_id"
    test = run_dbt(["test", "--select", f"{owners}*"], fresh, tmp_path / "t")
    assert test.returncode == 0, test.stdout[-3000:]
    assert test.failures(owners) == ("pass", 0)
    assert "is not built yet; nothing compared" in test.stdout


def test_two_reads_of_one_modstamp_second_make_one_history_row_per_instant(tmp_path):
    # Seen in `make bench-latency`: a bootstrap-tail Bulk read and a REST re-read of the same
    # SystemModstamp second with different contents (a formula field moves without it) are
    # two scd2 versions with one version time; the first closes where it opens, and
    # unique (opportunity_id, valid_from) failed the revenue build.
    path = tmp_path / "warehouse.duckdb"
    with engine(path) as wh:
        specs = create_tables(wh)
        opp = specs["Opportunity"]
        first = _opportunity(GOOD, ACCOUNT)
        apply(wh, opp, snapshot_rows(opp, [first]))
        apply(wh, opp, snapshot_rows(opp, [{**first, "Amount": Decimal("2000.00")}]))
        versions = wh.query(
            "select count(*), count(distinct valid_from) from sfdc_history.opportunity"
        )[0]
    assert versions == (2, 1)  # the engine keeps both observed versions
    model = "stg_salesforce__opportunity_history"
    built = run_dbt(["build", "--select", model], path, tmp_path / "history")
    assert built.returncode == 0, built.stdout[-3000:]
    assert built.failures(f"unique_combination_of_columns_{model}") == ("pass", 0)
