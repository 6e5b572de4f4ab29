"""REST API over real HTTPS, driven through simple-salesforce (and requests for raw checks)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from tests.sfdc_emulator.http_fixtures import API_VERSION, Emulator, clean_faults, emulator

__all__ = ["clean_faults", "emulator"]

REST_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")


def live_ids(em: Emulator, obj: str) -> set[str]:
    table = em.store.truth(obj)
    return {
        rid
        for rid, deleted in zip(
            table.column("Id").to_pylist(), table.column("IsDeleted").to_pylist(), strict=True
        )
        if not deleted
    }


def test_versions_list_needs_no_auth_and_resources_are_listed(emulator: Emulator) -> None:
    session = emulator.session()
    versions = session.get(emulator.server.url + "/services/data/").json()
    assert {"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"} in versions
    sf = emulator.sf()
    resources = sf.restful("")
    assert resources["query"] == f"/services/data/v{API_VERSION}/query"


def test_describe_global_and_object_describe(emulator: Emulator) -> None:
    sf = emulator.sf()
    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Account", "Opportunity", "Task", "User"} <= names
    describe = sf.Opportunity.describe()
    assert describe["name"] == "Opportunity" and describe["keyPrefix"] == "006"
    assert "StageName" in {f["name"] for f in describe["fields"]}
    assert sf.Opportunity.metadata()["objectDescribe"]["name"] == "Opportunity"


def test_unknown_sobject_is_not_found(emulator: Emulator) -> None:
    with pytest.raises(SalesforceResourceNotFound):
        emulator.sf().Nope__c.describe()


def test_limits_and_usage_header_count_calls(emulator: Emulator) -> None:
    sf = emulator.sf()
    first = sf.limits()["DailyApiRequests"]
    used_after_first = sf.api_usage["api-usage"].used
    second = sf.limits()["DailyApiRequests"]
    assert sf.api_usage["api-usage"].used == used_after_first + 1
    assert second["Remaining"] == first["Remaining"] - 1
    assert sf.api_usage["api-usage"].total == first["Max"]
    for key in (
        "DailyBulkV2QueryJobs",
        "DailyBulkV2QueryFileStorageMB",
        "DailyDeliveredPlatformEvents",
    ):
        assert set(sf.limits()[key]) == {"Max", "Remaining"}


def test_paths_answer_with_and_without_trailing_slash(emulator: Emulator) -> None:
    session = emulator.session()
    headers = {"Authorization": f"Bearer {emulator.server.access_token}"}
    base = f"{emulator.server.url}/services/data/v{API_VERSION}/limits"
    assert session.get(base, headers=headers).status_code == 200
    assert session.get(base + "/", headers=headers).status_code == 200


def test_unknown_path_is_a_salesforce_404(emulator: Emulator) -> None:
    session = emulator.session()
    response = session.get(emulator.server.url + "/services/data/v59.0/nothing-here")
    assert response.status_code == 404
    assert response.json()[0]["errorCode"] == "NOT_FOUND"
    assert response.headers["Sforce-Limit-Info"].startswith("api-usage=")


def test_query_pages_through_more_than_2000_records(emulator: Emulator) -> None:
    sf = emulator.sf()
    first = sf.query("SELECT Id, Subject FROM Task")
    assert first["done"] is False and len(first["records"]) == 2000
    assert first["nextRecordsUrl"].startswith(f"/services/data/v{API_VERSION}/query/01g")
    assert first["nextRecordsUrl"].endswith("-2000")
    everything = sf.query_all("SELECT Id, Subject FROM Task")
    ids = [r["Id"] for r in everything["records"]]
    assert len(ids) == len(set(ids)) == everything["totalSize"]
    assert set(ids) == live_ids(emulator, "Task")


def test_batch_size_header_sets_page_size(emulator: Emulator) -> None:
    sf = emulator.sf()
    pages = []
    result = sf.query("SELECT Id FROM Task", headers={"Sforce-Query-Options": "batchSize=500"})
    pages.append(len(result["records"]))
    while not result["done"]:
        result = sf.query_more(result["nextRecordsUrl"], identifier_is_url=True)
        pages.append(len(result["records"]))
    assert pages[:-1] == [500] * (len(pages) - 1)
    assert sum(pages) == result["totalSize"]


def test_query_all_iter_yields_records_with_attributes(emulator: Emulator) -> None:
    sf = emulator.sf()
    records = list(sf.query_all_iter("SELECT Id, CreatedDate, ActivityDate FROM Task"))
    assert len(records) == len(live_ids(emulator, "Task"))
    sample = records[0]
    assert sample["attributes"]["type"] == "Task"
    assert (
        sample["attributes"]["url"] == f"/services/data/v{API_VERSION}/sobjects/Task/{sample['Id']}"
    )
    assert REST_DATETIME.match(sample["CreatedDate"])


def test_parent_relationships_are_nested_objects(emulator: Emulator) -> None:
    sf = emulator.sf()
    record = sf.query(
        "SELECT Id, Amount, Account.Name, Account.Owner.Name, Owner.Name FROM Opportunity "
        "WHERE AccountId != null LIMIT 1"
    )["records"][0]
    assert record["Account"]["attributes"]["type"] == "Account"
    assert isinstance(record["Account"]["Name"], str)
    assert record["Account"]["Owner"]["attributes"]["type"] == "User"
    assert isinstance(record["Owner"]["Name"], str)
    orphan = sf.query("SELECT Id, Parent.Name FROM Account WHERE ParentId = null LIMIT 1")
    assert orphan["records"][0]["Parent"] is None


def test_compound_address_is_an_object(emulator: Emulator) -> None:
    record = emulator.sf().query(
        "SELECT Id, BillingAddress FROM Account WHERE BillingCity != null LIMIT 1"
    )["records"][0]
    assert set(record["BillingAddress"]) >= {"city", "country", "postalCode", "street"}


def test_count_query(emulator: Emulator) -> None:
    result = emulator.sf().query("SELECT COUNT() FROM Task")
    assert result["totalSize"] == len(live_ids(emulator, "Task")) and result["records"] == []


def test_query_all_returns_deleted_rows(emulator: Emulator) -> None:
    deleted = emulator.admin("delete", object="Opportunity", count=3)["ids"]
    sf = emulator.sf()
    soql = "SELECT Id, IsDeleted FROM Opportunity"
    live = {r["Id"] for r in sf.query_all(soql)["records"]}
    everything = {
        r["Id"]: r["IsDeleted"] for r in sf.query_all(soql, include_deleted=True)["records"]
    }
    assert not set(deleted) & live
    assert all(everything[i] is True for i in deleted)


def test_retrieve_with_fields(emulator: Emulator) -> None:
    sf = emulator.sf()
    rid = sf.query("SELECT Id FROM Opportunity LIMIT 1")["records"][0]["Id"]
    record = sf.Opportunity.get(rid)
    assert record["Id"] == rid and "StageName" in record
    narrow = sf.restful(f"sobjects/Opportunity/{rid}", params={"fields": "Name,Amount"})
    assert set(narrow) == {"attributes", "Id", "Name", "Amount"}
    with pytest.raises(SalesforceResourceNotFound):
        sf.Opportunity.get("006000000000000AAA")


def test_deleted_and_updated_with_tz_aware_datetimes(emulator: Emulator) -> None:
    sf = emulator.sf()
    start = emulator.store.clock.now() - timedelta(minutes=5)
    deleted = emulator.admin("delete", object="Contact", count=2)["ids"]
    updated = emulator.admin("update", object="Contact", count=2, fields={"Title": "VP"})["ids"]
    # getDeleted/getUpdated cover whole minutes before now: step the org clock past this one.
    emulator.admin("advance-clock", duration="2m")
    end = emulator.store.clock.now()
    result = sf.Contact.deleted(start, end)
    assert {d["id"] for d in result["deletedRecords"]} >= set(deleted)
    assert REST_DATETIME.match(result["earliestDateAvailable"])
    assert REST_DATETIME.match(result["latestDateCovered"])
    assert set(sf.Contact.updated(start, end)["ids"]) >= set(updated)


def test_get_deleted_lists_the_recycle_bin_and_refuses_windows_a_purge_cut_short(
    emulator: Emulator,
) -> None:
    """Reference §4.3 and the SOAP getDeleted() guide: deleted records come from the delete
    log with deletedDate = SystemModstamp; once records are physically deleted (hard
    delete, Recycle Bin emptied) earliestDateAvailable moves up to that deletion, and a
    window starting before it is refused with INVALID_REPLICATION_DATE: only a full
    comparison of Ids finds the deletes it no longer lists."""
    from sfdc_emulator.store import Mutation

    sf, store = emulator.sf(), emulator.store
    start = store.clock.now() - timedelta(minutes=5)
    binned = emulator.admin("delete", object="Event", count=3)["ids"]
    store.advance_clock(120)
    listed = sf.Event.deleted(start, store.clock.now())
    assert {d["id"] for d in listed["deletedRecords"]} >= set(binned)
    stamp = store.get("Event", binned[0])["SystemModstamp"]  # type: ignore[index]
    (entry,) = [d for d in listed["deletedRecords"] if d["id"] == binned[0]]
    assert entry["deletedDate"] == stamp.strftime("%Y-%m-%dT%H:%M:%S.000+0000")

    # empty the Recycle Bin of one, hard-delete a live one: both vanish without a trace
    live = next(iter(live_ids(emulator, "Event")))
    purged = store.commit([Mutation("purge", "Event", binned[0]), Mutation("purge", "Event", live)])
    store.advance_clock(120)
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Event.deleted(start, store.clock.now())
    assert info.value.content[0]["errorCode"] == "INVALID_REPLICATION_DATE"
    assert "earliestDateAvailable" in info.value.content[0]["message"]

    after = datetime.fromtimestamp(purged.commit_ts // 1000 + 1, UTC)
    later = emulator.admin("delete", object="Event", count=1)["ids"]
    store.advance_clock(120)
    window = sf.Event.deleted(after, store.clock.now())
    assert window["earliestDateAvailable"] == after.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    assert {d["id"] for d in window["deletedRecords"]} == set(later)
    # other objects keep their full 15 days
    assert sf.Contact.deleted(start, store.clock.now())["deletedRecords"] is not None


def test_replication_date_errors(emulator: Emulator) -> None:
    sf = emulator.sf()
    now = datetime.now(UTC)
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Contact.updated(now, now - timedelta(hours=1))
    assert info.value.content[0]["errorCode"] == "INVALID_REPLICATION_DATE"
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Contact.updated(emulator.store.clock.now() - timedelta(days=40), now)
    assert info.value.content[0]["errorCode"] == "INVALID_REPLICATION_DATE"


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id, FROM Account", "MALFORMED_QUERY"),
        ("SELECT Nope FROM Account", "INVALID_FIELD"),
        ("SELECT Id FROM Nope__c", "INVALID_TYPE"),
    ],
)
def test_bad_soql_raises_malformed_request(emulator: Emulator, soql: str, code: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as info:
        emulator.sf().query(soql)
    assert info.value.content[0]["errorCode"] == code


def test_unknown_token_is_an_expired_session(emulator: Emulator) -> None:
    with pytest.raises(SalesforceExpiredSession) as info:
        emulator.sf(token="00Dbogus!token").limits()
    assert info.value.content == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


def test_invalid_query_locator(emulator: Emulator) -> None:
    with pytest.raises(SalesforceMalformedRequest) as info:
        emulator.sf().query_more("01gXXXXXXXXXXXXXXX-2000")
    assert info.value.content[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_injected_503_is_a_general_error(clean_faults: Emulator) -> None:
    em = clean_faults
    em.admin("fail", target="rest", status=503, count=1)
    with pytest.raises(SalesforceGeneralError) as info:
        em.sf().limits()
    assert info.value.status == 503
    assert info.value.content[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert em.sf().limits()


def test_daily_limit_refuses_requests(clean_faults: Emulator) -> None:
    em = clean_faults
    em.admin("fail", target="limit", kind="daily")
    with pytest.raises(SalesforceRefusedRequest) as info:
        em.sf().query("SELECT Id FROM Account LIMIT 1")
    assert info.value.content == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]


def test_concurrent_limit_refuses_requests(clean_faults: Emulator) -> None:
    em = clean_faults
    em.admin("fail", target="limit", kind="concurrent", count=1)
    with pytest.raises(SalesforceRefusedRequest) as info:
        em.sf().limits()
    assert info.value.content[0]["message"] == "ConcurrentPerOrgLongTxn Limit exceeded."
    assert em.sf().limits()


def test_records_can_be_written_through_rest(emulator: Emulator) -> None:
    sf = emulator.sf()
    created = sf.Account.create({"Name": "Written via REST", "Industry": "Energy"})
    assert created["success"] is True
    sf.Account.update(created["id"], {"Industry": "Banking"})
    assert emulator.store.get("Account", created["id"])["Industry"] == "Banking"
    sf.Account.delete(created["id"])
    assert emulator.store.get("Account", created["id"])["IsDeleted"] is True
    with pytest.raises(SalesforceMalformedRequest):
        sf.Account.create({"Name": "x", "NoSuchField__c": 1})


def test_record_count_is_a_snapshot_of_live_rows_refreshed_every_five_minutes(
    emulator: Emulator,
) -> None:
    sf = emulator.sf()

    def counts(names: str) -> dict[str, int]:
        body = sf.restful("limits/recordCount", params={"sObjects": names})
        return {e["name"]: e["count"] for e in body["sObjects"]}

    emulator.admin("advance-clock", duration="5m")  # a fresh snapshot from here
    live = len(live_ids(emulator, "Lead"))
    # Unknown objects are left out; soft-deleted rows are not counted.
    assert counts("Lead,NoSuchThing__c") == {"Lead": live}
    assert live < emulator.store.count("Lead", include_deleted=True)
    created = sf.Lead.create({"LastName": "Counted later", "Company": "Snapshot Ltd"})
    emulator.admin("advance-clock", duration="4m")
    assert counts("Lead") == {"Lead": live}  # not live: the snapshot is 4 minutes old
    emulator.admin("advance-clock", duration="1m")
    assert counts("lead") == {"Lead": live + 1}  # refreshed; names are case-insensitive
    sf.Lead.delete(created["id"])
    everything = sf.restful("limits/recordCount")["sObjects"]
    assert {e["name"] for e in everything} == set(emulator.store.schema.names())
