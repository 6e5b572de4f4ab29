"""Bulk API 2.0 query jobs over real HTTPS, driven through simple-salesforce's bulk2 client
(and requests for the raw protocol: states, headers, gzip)."""

from __future__ import annotations

import csv
import gzip
import io
import time
from pathlib import Path
from typing import Any

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceOperationError

from tests.sfdc_emulator.http_fixtures import API_VERSION, Emulator, clean_faults, emulator

__all__ = ["clean_faults", "emulator"]

SOQL = "SELECT Id, Subject, IsDeleted, CreatedDate, ActivityDate, CallDurationInSeconds FROM Task"


def rows_of(pages: list[str]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for page in pages:
        rows.extend(csv.DictReader(io.StringIO(page)))
    return rows


def expected_csv(value: Any) -> str:
    """How Salesforce renders one value in Bulk CSV."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "hour"):
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def truth_rows(em: Emulator, obj: str, fields: list[str], deleted: bool) -> dict[str, dict]:
    table = em.store.truth(obj).to_pylist()
    return {
        r["Id"]: {f: expected_csv(r[f]) for f in fields}
        for r in table
        if deleted or not r["IsDeleted"]
    }


def api(em: Emulator, method: str, path: str, **kwargs: Any) -> Any:
    session = em.session()
    headers = {"Authorization": f"Bearer {em.server.access_token}", **kwargs.pop("headers", {})}
    url = f"{em.server.url}/services/data/v{API_VERSION}/{path}"
    return session.request(method, url, headers=headers, **kwargs)


def wait_state(em: Emulator, job_id: str, states: set[str], timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = api(em, "GET", f"jobs/query/{job_id}").json()
        if info["state"] in states or time.monotonic() > deadline:
            return info
        time.sleep(0.05)


def test_query_pages_equal_the_store_truth(emulator: Emulator) -> None:
    sf = emulator.sf()
    pages = list(sf.bulk2.Task.query(SOQL, max_records=700, wait=0.1))
    assert len(pages) >= 4
    assert all(p.startswith('"Id","Subject","IsDeleted","CreatedDate"') for p in pages)
    rows = rows_of(pages)
    fields = ["Subject", "IsDeleted", "CreatedDate", "ActivityDate", "CallDurationInSeconds"]
    got = {r["Id"]: {f: r[f] for f in fields} for r in rows}
    assert len(got) == len(rows)
    assert got == truth_rows(emulator, "Task", fields, deleted=False)


def test_query_all_includes_deleted_rows(emulator: Emulator) -> None:
    deleted = emulator.admin("delete", object="Task", count=5)["ids"]
    sf = emulator.sf()
    rows = rows_of(list(sf.bulk2.Task.query_all("SELECT Id, IsDeleted FROM Task", wait=0.1)))
    by_id = {r["Id"]: r["IsDeleted"] for r in rows}
    assert all(by_id[i] == "true" for i in deleted)
    assert set(by_id) == set(truth_rows(emulator, "Task", [], deleted=True))


def test_download_writes_one_file_per_page(emulator: Emulator, tmp_path: Path) -> None:
    sf = emulator.sf()
    results = sf.bulk2.Opportunity.download(
        "SELECT Id, Name, Amount, Account.Name FROM Opportunity", str(tmp_path), max_records=40,
        wait=0.1,
    )  # fmt: skip
    assert [r["locator"] for r in results][-1] == ""
    total = 0
    for result in results:
        text = Path(result["file"]).read_text()
        assert text.startswith('"Id","Name","Amount","Account.Name"')
        total += result["number_of_records"]
    assert total == len(truth_rows(emulator, "Opportunity", [], deleted=False))


def test_values_with_quotes_commas_and_newlines_round_trip(emulator: Emulator) -> None:
    sf = emulator.sf()
    name = 'Acme, "Quoted"\nSecond line'
    created = sf.Account.create({"Name": name})["id"]
    soql = f"SELECT Id, Name, Phone FROM Account WHERE Id = '{created}'"
    pages = list(sf.bulk2.Account.query(soql, wait=0.1))
    assert pages[0].splitlines()[1].startswith(f'"{created}","Acme, ""Quoted""')
    (row,) = rows_of(pages)
    assert row["Name"] == name and row["Phone"] == ""


def test_pipe_delimiter_and_crlf(emulator: Emulator) -> None:
    sf = emulator.sf()
    pages = list(
        sf.bulk2.User.query(
            "SELECT Id, Username FROM User", column_delimiter="PIPE", line_ending="CRLF", wait=0.1
        )
    )
    assert pages[0].startswith('"Id"|"Username"\r\n')


@pytest.mark.parametrize(
    "soql",
    [
        "SELECT COUNT() FROM Task",
        "SELECT Id FROM Task LIMIT 10 OFFSET 5",
        "SELECT FIELDS(STANDARD) FROM Task",
        "SELECT Id, BillingAddress FROM Account",
        "SELECT Id, Nope FROM Task",
    ],
)
def test_unsupported_bulk_soql_is_refused(emulator: Emulator, soql: str) -> None:
    with pytest.raises(SalesforceMalformedRequest):
        list(emulator.sf().bulk2.Task.query(soql, wait=0.1))


def test_job_state_machine_headers_and_gzip(clean_faults: Emulator) -> None:
    em = clean_faults
    em.admin("slow", target="bulk", seconds=0.5, count=1)
    live_before = len(truth_rows(em, "Lead", [], deleted=False))
    created = api(
        em,
        "POST",
        "jobs/query",
        json={"operation": "query", "query": "SELECT Id, Name FROM Lead"},
        headers={"Accept": "text/csv"},
    ).json()
    assert created["state"] == "UploadComplete" and created["id"].startswith("750")
    assert created["jobType"] == "V2Query" and created["apiVersion"] == float(API_VERSION)
    early = api(em, "GET", f"jobs/query/{created['id']}/results")
    assert early.status_code == 412
    # Committed after job creation: not in the job's snapshot.
    em.admin("delete", object="Lead", count=3)
    info = wait_state(em, created["id"], {"JobComplete"})
    assert info["state"] == "JobComplete"
    assert info["numberRecordsProcessed"] == live_before

    first = api(em, "GET", f"jobs/query/{created['id']}/results", params={"maxRecords": 10},
                headers={"Accept-Encoding": "gzip"}, stream=True)  # fmt: skip
    assert first.headers["Content-Encoding"] == "gzip"
    assert first.headers["Sforce-NumberOfRecords"] == "10"
    body = gzip.decompress(first.raw.read())
    assert body.count(b"\n") == 11
    locator = first.headers["Sforce-Locator"]
    again = api(em, "GET", f"jobs/query/{created['id']}/results",
                params={"maxRecords": 10_000, "locator": locator},
                headers={"Accept-Encoding": "identity"})  # fmt: skip
    assert "Content-Encoding" not in again.headers
    assert again.headers["Sforce-Locator"] == "null"
    assert int(again.headers["Sforce-NumberOfRecords"]) == info["numberRecordsProcessed"] - 10

    listed = api(em, "GET", "jobs/query").json()
    assert created["id"] in {j["id"] for j in listed["records"]}
    deleted = api(em, "DELETE", f"jobs/query/{created['id']}")
    assert deleted.status_code == 204
    assert api(em, "GET", f"jobs/query/{created['id']}").status_code == 404


def test_abort_a_running_job(clean_faults: Emulator) -> None:
    em = clean_faults
    em.admin("slow", target="bulk", seconds=5, count=1)
    job = api(em, "POST", "jobs/query", json={"operation": "query", "query": "SELECT Id FROM Task"})
    job_id = job.json()["id"]
    aborted = api(em, "PATCH", f"jobs/query/{job_id}", json={"state": "Aborted"}).json()
    assert aborted["state"] == "Aborted"
    assert wait_state(em, job_id, {"Aborted"})["state"] == "Aborted"
    refused = api(em, "PATCH", f"jobs/query/{job_id}", json={"state": "Aborted"})
    assert refused.status_code == 400


def test_failed_job_raises_operation_error(clean_faults: Emulator) -> None:
    em = clean_faults
    em.admin("fail", target="bulk", count=1, message="InternalServerError")
    with pytest.raises(SalesforceOperationError):
        list(em.sf().bulk2.Task.query("SELECT Id FROM Task", wait=0.1))


def test_identity_pages_have_a_length_and_equal_the_gzip_pages(emulator: Emulator) -> None:
    created = api(
        emulator,
        "POST",
        "jobs/query",
        json={"operation": "queryAll", "query": "SELECT Id, Name, Description FROM Account"},
    ).json()
    info = wait_state(emulator, created["id"], {"JobComplete"})
    bodies: dict[str, list[bytes]] = {}
    for encoding in ("identity", "gzip"):
        locator, pages = "", []
        while locator != "null":
            params = {"maxRecords": 37, **({"locator": locator} if locator else {})}
            page = api(emulator, "GET", f"jobs/query/{created['id']}/results", params=params,
                       headers={"Accept-Encoding": encoding}, stream=True)  # fmt: skip
            raw = page.raw.read()
            if encoding == "identity":
                # Known length: no chunked framing.
                assert int(page.headers["Content-Length"]) == len(raw)
                assert "Transfer-Encoding" not in page.headers
            else:
                assert page.headers["Content-Encoding"] == "gzip"
                raw = gzip.decompress(raw)
            assert raw.startswith(b'"Id","Name","Description"\n')
            pages.append(raw)
            locator = page.headers["Sforce-Locator"]
        bodies[encoding] = pages
    assert bodies["identity"] == bodies["gzip"]
    rows = sum(len(list(csv.DictReader(io.StringIO(p.decode())))) for p in bodies["identity"])
    assert rows == info["numberRecordsProcessed"]


def test_csv_lines_quote_every_non_null_value_and_leave_nulls_empty(emulator: Emulator) -> None:
    sf = emulator.sf()
    created = sf.Account.create({"Name": 'Tab\there "q" ^ |', "NumberOfEmployees": 12})["id"]
    soql = (
        "SELECT Id, Name, Phone, NumberOfEmployees, IsDeleted, CreatedDate FROM Account "
        f"WHERE Id = '{created}'"
    )
    (page,) = sf.bulk2.Account.query(soql, column_delimiter="CARET", wait=0.1)
    header, line = page.splitlines()
    assert header == '"Id"^"Name"^"Phone"^"NumberOfEmployees"^"IsDeleted"^"CreatedDate"'
    assert line.startswith(f'"{created}"^"Tab\there ""q"" ^ |"^^"12"^"false"^"')
    assert line.endswith('.000Z"')


@pytest.mark.parametrize(
    ("kind", "limit"),
    [("bulk-jobs", "DailyBulkV2QueryJobs"), ("bulk-mb", "DailyBulkV2QueryFileStorageMB")],
)
def test_exhausted_daily_bulk_allocation_refuses_new_jobs(
    clean_faults: Emulator, kind: str, limit: str
) -> None:
    em = clean_faults
    sf = em.sf()
    list(sf.bulk2.Task.query("SELECT Id FROM Task"))
    assert sf.limits()[limit]["Remaining"] > 0
    em.admin("fail", target="limit", kind=kind)  # Max := what the last 24 h used
    assert sf.limits()[limit]["Remaining"] == 0
    created = api(em, "POST", "jobs/query", json={"operation": "query", "query": SOQL})
    assert created.status_code == 400
    assert created.json()[0]["errorCode"] == "EXCEEDED_QUOTA"
    assert limit in created.json()[0]["message"]
    em.admin("fail", target="limit", kind=kind, clear=True)
    assert list(sf.bulk2.Task.query("SELECT Id FROM Task"))


def test_bulk_job_allocation_is_a_rolling_24h_that_counts_deleted_jobs(
    clean_faults: Emulator,
) -> None:
    em = clean_faults
    job = api(em, "POST", "jobs/query", json={"operation": "query", "query": SOQL}).json()
    wait_state(em, job["id"], {"JobComplete"})
    used = em.sf().limits()["DailyBulkV2QueryJobs"]
    assert api(em, "DELETE", f"jobs/query/{job['id']}").status_code == 204
    assert em.sf().limits()["DailyBulkV2QueryJobs"] == used  # deleting gives nothing back
    em.admin("fail", target="limit", kind="bulk-jobs")
    refused = api(em, "POST", "jobs/query", json={"operation": "query", "query": SOQL})
    assert refused.status_code == 400
    em.admin("advance-clock", duration="24h")
    assert em.sf().limits()["DailyBulkV2QueryJobs"]["Remaining"] > 0
    assert list(em.sf().bulk2.Task.query("SELECT Id FROM Task"))


def test_query_log_lists_the_soql_served(clean_faults: Emulator) -> None:
    em = clean_faults
    em.admin("query-log", clear=True)
    em.sf().query("SELECT Id FROM Account LIMIT 1")
    api(em, "POST", "jobs/query", json={"operation": "queryAll", "query": SOQL})
    assert em.admin("query-log")["queries"] == [
        {"endpoint": "query", "soql": "SELECT Id FROM Account LIMIT 1"},
        {"endpoint": "bulk", "soql": SOQL},
    ]
