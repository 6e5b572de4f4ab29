"""dbt tests fail on broken facts, and only on those: the checks that block the marts.

A small hand-made org goes through the engine; then an opportunity whose account never
arrived (synced 3 hours ago, outside the late-arrival window), one whose account may still
be on its way (synced now), and a second open scd2 version of one opportunity (what a
broken merge would leave; the current table's primary key makes a duplicate Id there
impossible) are planted, and the staging layer is built.
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
GOOD, ORPHAN_OLD, ORPHAN_NEW = (f"00600000000000{n}AAA" for n in (1, 2, 3))


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


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    return once("dbt_broken", lambda: _plant_and_build(tmp_path_factory))


def _plant_and_build(tmp_path_factory):
    base = tmp_path_factory.mktemp("dbt_broken")
    path = base / "warehouse.duckdb"
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with engine(path) as wh:
        specs = create_tables(wh)
        apply(
            wh,
            specs["User"],
            snapshot_rows(
                specs["User"],
                [{"Id": USER, "Name": "Rep", "IsActive": True, "SystemModstamp": MODSTAMP}],
            ),
        )
        apply(
            wh,
            specs["Account"],
            snapshot_rows(
                specs["Account"],
                [{"Id": ACCOUNT, "Name": "Acme", "OwnerId": USER, "SystemModstamp": MODSTAMP}],
            ),
        )
        opp = specs["Opportunity"]
        apply(wh, opp, snapshot_rows(opp, [_opportunity(GOOD, ACCOUNT)]))
        apply(
            wh,
            opp,
            snapshot_rows(opp, [_opportunity(ORPHAN_OLD, MISSING_ACCOUNT)]),
            now=now - dt.timedelta(hours=3),
        )
        apply(wh, opp, snapshot_rows(opp, [_opportunity(ORPHAN_NEW, MISSING_ACCOUNT)]), now=now)
        wh.execute(
            "insert into sfdc_history.opportunity by name "
            "select * replace (valid_from + interval 1 second as valid_from) "
            "from sfdc_history.opportunity where id = ?",
            [GOOD],
        )
    return run_dbt(["build", "--select", "staging"], path, base / "dbt")


def test_an_orphan_account_id_outside_the_late_arrival_window_fails_the_relationship_test(
    broken_run,
):
    assert broken_run.returncode != 0
    # Exactly one failing row: the orphan synced 3 hours ago; the one synced now is
    # tolerated as a parent still in flight.
    assert broken_run.failures(
        "relationships_late_tolerant_stg_salesforce__opportunity_account_id"
    ) == ("fail", 1)


def test_a_second_open_version_of_one_opportunity_fails_the_scd2_test(broken_run):
    assert broken_run.failures("at_most_one_current_stg_salesforce__opportunity_history") == (
        "fail",
        1,
    )


def test_the_tests_of_unbroken_facts_still_pass(broken_run):
    statuses = {uid.split(".")[2]: status for uid, status in broken_run.by_status("test").items()}
    failing = sorted(name for name, status in statuses.items() if status != "pass")
    assert [name.split("_stg_")[0] for name in failing] == [
        "at_most_one_current",
        "relationships_late_tolerant",
    ]
    assert statuses["unique_stg_salesforce__opportunity_opportunity_id"] == "pass"
    assert statuses["not_null_stg_salesforce__opportunity_opportunity_id"] == "pass"
