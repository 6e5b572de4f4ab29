"""One org state, every protocol: Bulk and REST queryAll equal truth; CDC alone cannot.

For any generated sequence of mutations (creates, partial updates with explicit nulls,
deletes, undeletes, purges, changes of the parent Account a cross-object formula reads,
several records in one transaction, and a last stretch of transactions whose events the
org loses), the rows a real simple-salesforce Bulk 2.0 queryAll job returns and the
records REST queryAll returns equal the store's ground truth in every field. The state
obtained by folding the CDC stream received over real gRPC differs from truth exactly
where Salesforce's change stream is blind (issue 10): formula fields (never carried),
the changes whose events were lost (the state stays as of the last delivered event) and
purged records (no event: still there in the fold). Nothing more, nothing less.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import grpc
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simple_salesforce import Salesforce

from resources.salesforce.pubsub_api import pubsub_api_pb2 as pb2
from resources.salesforce.pubsub_api import pubsub_api_pb2_grpc as pb2_grpc
from sfdc_emulator.server import EmulatorServer
from sfdc_emulator.store import Mutation
from tests.sfdc_emulator.pubsub_fixtures import (
    SchemaCache,
    SubscribeClient,
    bitmap_field_names,
    replay_bytes,
)


class OrgSchemaCache(SchemaCache):
    """GetSchema with the org's own credentials."""

    def __init__(self, stub: pb2_grpc.PubSubStub, metadata: tuple[tuple[str, str], ...]) -> None:
        super().__init__(stub)
        self.metadata = metadata

    def get(self, schema_id: str) -> tuple[dict[str, Any], Any]:
        if schema_id not in self.parsed:
            info = self.stub.GetSchema(
                pb2.SchemaRequest(schema_id=schema_id), metadata=self.metadata
            )
            self.raw[schema_id] = json.loads(info.schema_json)
            self.parsed[schema_id] = fastavro.parse_schema(self.raw[schema_id])
        return self.raw[schema_id], self.parsed[schema_id]


def org_metadata(org: EmulatorServer) -> tuple[tuple[str, str], ...]:
    """The three Pub/Sub auth metadata entries for the running org."""
    info = org.info
    return (
        ("accesstoken", info["access_token"]),
        ("instanceurl", info["instance_url"]),
        ("tenantid", info["tenant_id"]),
    )


OBJECTS = ("Account", "Opportunity")
STAGES = ("Prospecting", "Qualification", "Negotiation/Review", "Closed Won", "Closed Lost")
RATINGS = ("Hot", "Warm", "Cold")
text = st.text(alphabet="abcdefghij ,\"'\n", min_size=1, max_size=12)


@dataclass(frozen=True)
class Parent:
    """One of the seeded Accounts the generated Opportunities may point to (by index)."""

    index: int


PARENTS = 3
parents = st.builds(Parent, st.integers(0, PARENTS - 1))
VALUES: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "Account": {
        "Name": text,
        "BillingCity": st.none() | text,
        "BillingPostalCode": st.none() | st.sampled_from(["75001", "10115", "02134"]),
        "AnnualRevenue": st.none() | st.integers(0, 10**9).map(Decimal),
        "NumberOfEmployees": st.none() | st.integers(0, 100_000),
        "Description": st.none() | text,
    },
    "Opportunity": {
        "Name": text,
        "StageName": st.sampled_from(STAGES),
        "Amount": st.none() | st.integers(0, 10**8).map(lambda c: Decimal(c) / 100),
        "CloseDate": st.dates(date(2020, 1, 1), date(2030, 12, 31)),
        "Description": st.none() | text,
        "AccountId": st.none() | parents,
    },
}
REQUIRED = {"Account": ("Name",), "Opportunity": ("Name", "StageName", "CloseDate")}
# Most Opportunities start with what their formulas read (ExpectedRevenue: Amount;
# Account_Rating__c: a parent Account), so the formula columns are rarely null.
USUALLY = {
    "Opportunity": {
        "Amount": st.integers(1, 10**8).map(lambda c: Decimal(c) / 100),
        "AccountId": parents,
    }
}


@st.composite
def creates(draw: st.DrawFn, obj: str) -> dict[str, Any]:
    """A create's values: required fields, usually the formulas' inputs, any others."""
    fields = VALUES[obj]
    values = {name: draw(fields[name]) for name in REQUIRED[obj]}
    for name, strategy in USUALLY.get(obj, {}).items():
        if draw(st.integers(0, 4)):
            values[name] = draw(strategy)
    for name in draw(st.sets(st.sampled_from(sorted(fields)))):
        values[name] = draw(fields[name])
    return values


Txn = list[tuple[str, int, dict[str, Any]]]


@dataclass(frozen=True)
class History:
    """Transactions of (op, record index, values) over a few records of ``obj``; the
    events of the transactions from index ``drop_from`` on are lost."""

    obj: str
    txns: list[Txn]
    drop_from: int


@st.composite
def histories(draw: st.DrawFn) -> History:
    """An object, its transactions, and where the org starts losing their events."""
    obj = draw(st.sampled_from(OBJECTS))
    n_records = draw(st.integers(1, 3))
    txns: list[Txn] = [[("create", i, draw(creates(obj))) for i in range(n_records)]]
    fields = VALUES[obj]
    ops = ["update", "update", "delete", "undelete", "purge"]
    if obj == "Opportunity":
        ops.append("parent")  # the Rating of a parent Account the formula reads
    for _ in range(draw(st.integers(1, 6))):
        txn = []
        for _ in range(draw(st.integers(1, 3))):
            op = draw(st.sampled_from(ops))
            idx = draw(st.integers(0, n_records - 1))
            values: dict[str, Any] = {}
            if op == "update":
                names = draw(st.sets(st.sampled_from(sorted(fields)), min_size=1))
                values = {n: draw(fields[n]) for n in names if n not in REQUIRED[obj]}
                values |= {n: draw(fields[n]) for n in names if n in REQUIRED[obj]}
            elif op == "parent":
                idx = draw(st.integers(0, PARENTS - 1))
                values = {"Rating": draw(st.none() | st.sampled_from(RATINGS))}
            txn.append((op, idx, values))
        txns.append(txn)
    # the creates are always delivered; any suffix of the rest (or nothing) is lost
    return History(obj, txns, draw(st.integers(1, len(txns))))


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    server = EmulatorServer(tmp_path_factory.mktemp("org"), scale="tiny", seed=3, keepalive_s=0.5)
    with server:
        yield server


@pytest.fixture(scope="module")
def sf(org: EmulatorServer) -> Salesforce:
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment beats verify=
    session.verify = org.info["ca_bundle"]
    return Salesforce(
        instance_url=org.info["instance_url"],
        session_id=org.info["access_token"],
        version=org.info["api_version"],
        session=session,
    )


@pytest.fixture(scope="module")
def describes(sf: Salesforce) -> dict[str, dict[str, Any]]:
    return {obj: getattr(sf, obj).describe() for obj in OBJECTS}


@pytest.fixture(scope="module")
def pubsub(org: EmulatorServer) -> Iterator[pb2_grpc.PubSubStub]:
    with grpc.insecure_channel(org.info["pubsub_target"]) as channel:
        yield pb2_grpc.PubSubStub(channel)


@pytest.fixture(scope="module")
def parent_ids(org: EmulatorServer) -> list[str]:
    """Seeded live Accounts for the generated Opportunities (Account histories never
    touch them: they work on the records they create)."""
    assert org.store is not None
    with org.store.read_cursor() as cur:
        rows = cur.execute(
            'SELECT Id FROM "Account" WHERE NOT IsDeleted ORDER BY Id LIMIT ?', [PARENTS]
        ).fetchall()
    assert len(rows) == PARENTS
    return [r[0] for r in rows]


def _resolve(values: dict[str, Any], parents: list[str]) -> dict[str, Any]:
    return {k: parents[v.index] if isinstance(v, Parent) else v for k, v in values.items()}


@dataclass
class Applied:
    """What :func:`apply` did: the records, which were purged, and the truth of the
    records just before the first transaction whose events were lost."""

    ids: list[str]
    purged: set[str]
    before_loss: dict[str, dict[str, Any]] | None


def apply(
    org: EmulatorServer,
    history: History,
    parents: list[str],
    snapshot: Any,
) -> Applied:
    """Commit the history through the write path, skipping ops the org would refuse;
    the events of the transactions from ``drop_from`` on are lost (drop fault at 100%)."""
    assert org.store is not None
    obj = history.obj
    ids: list[str] = []
    deleted: set[int] = set()
    purged: set[int] = set()
    before_loss = None
    for n, txn in enumerate(history.txns):
        mutations = []
        for op, idx, values in txn:
            if op == "create":
                mutations.append(Mutation("create", obj, values=_resolve(values, parents)))
                continue
            if op == "parent":
                if any(m.id == parents[idx] for m in mutations):
                    continue
                mutations.append(Mutation("update", "Account", id=parents[idx], values=values))
                continue
            if idx >= len(ids) or idx in purged:
                continue
            if op != "purge" and (op == "undelete") != (idx in deleted):
                continue  # update/delete of a deleted record, undelete of a live one
            if any(m.id == ids[idx] for m in mutations):
                continue  # one DML per record per transaction keeps the test's model simple
            mutations.append(Mutation(op, obj, id=ids[idx], values=_resolve(values, parents)))
            if op == "delete":
                deleted.add(idx)
            elif op == "undelete":
                deleted.discard(idx)
            elif op == "purge":
                purged.add(idx)
        if n == history.drop_from:
            before_loss = snapshot(ids)
            org.store.faults.drop_events(1.0)
        if mutations:
            result = org.store.commit(mutations)
            if txn[0][0] == "create":
                ids = list(result.ids)
    org.store.faults.drop_events(0)
    return Applied(ids, {ids[i] for i in purged}, before_loss)


def _norm(sf_type: str, value: Any) -> Any:
    """Every protocol's encoding of a value -> one comparable Python value."""
    if value is None or value == "":
        return None  # Bulk CSV cannot tell "" from null, nor can Salesforce text fields
    if sf_type == "datetime":
        if isinstance(value, int):
            return value
        if isinstance(value, datetime):
            value = value if value.tzinfo else value.replace(tzinfo=UTC)
            return int(value.timestamp() * 1000)
        text_value = str(value).replace("Z", "+0000")
        return int(datetime.strptime(text_value, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000)
    if sf_type == "date":
        if isinstance(value, int):
            return date(1970, 1, 1) + timedelta(days=value)
        return value if isinstance(value, date) else date.fromisoformat(str(value))
    if sf_type == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if sf_type in ("double", "currency", "percent", "int"):
        return round(float(value), 6)
    return str(value)


def cdc_state(
    stub: pb2_grpc.PubSubStub,
    org: EmulatorServer,
    obj: str,
    ids: list[str],
    after: int,
    until: int,
    describe: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Fold the CDC events of ``ids`` received over gRPC after replay id ``after``."""
    compound_children = {
        (f["compoundFieldName"], f["name"]): f["name"]
        for f in describe["fields"]
        if f.get("compoundFieldName")
    }
    state: dict[str, dict[str, Any]] = {}
    cache = OrgSchemaCache(stub, org_metadata(org))
    client = SubscribeClient(
        stub,
        f"/data/{obj}ChangeEvent",
        preset=pb2.CUSTOM,
        replay_id=replay_bytes(after),
        num_requested=100,
        metadata=org_metadata(org),
    )
    try:
        last = after
        while last < until:
            resp = client.next_response(timeout=10)
            for event in resp.events:
                last = int.from_bytes(event.replay_id, "big")
                schema, _ = cache.get(event.event.schema_id)
                payload = cache.decode(event)
                header = payload["ChangeEventHeader"]
                flat = _flatten(payload, compound_children)
                change = header["changeType"]
                for rid in header["recordIds"]:
                    if rid not in ids:
                        continue
                    row = state.setdefault(rid, {})
                    if change in ("CREATE", "UNDELETE"):
                        row.update(flat)
                        row["IsDeleted"] = False
                    elif change == "UPDATE":
                        changed = bitmap_field_names(schema, header["changedFields"])
                        nulled = set(bitmap_field_names(schema, header["nulledFields"]))
                        for name in changed:
                            key = _component(name, compound_children)
                            row[key] = None if name in nulled else flat.get(key)
                        for name in nulled:
                            row[_component(name, compound_children)] = None
                    elif change == "DELETE":
                        # header only: a user's delete stamps LastModifiedDate/ById, which
                        # a consumer can only take from the commit (sync_engine.changes)
                        row["IsDeleted"] = True
                        commit_ms = header["commitTimestamp"]
                        row["LastModifiedDate"] = commit_ms - commit_ms % 1000
                        row["LastModifiedById"] = header["commitUser"]
                    else:
                        raise AssertionError(f"unexpected {change} in a plain history")
            if resp.pending_num_requested == 0:
                client.request(100)
    finally:
        client.close()
    return state


def _component(name: str, children: dict[tuple[str, str], str]) -> str:
    """``BillingAddress.City`` → ``BillingCity``; ``Name.FirstName`` → ``FirstName``."""
    if "." not in name:
        return name
    parent, child = name.split(".", 1)
    for (p, full), _ in children.items():
        if p == parent and (full == child or full.endswith(child)):
            return full
    raise AssertionError(f"no component for {name}")


def _has_component(name: str, children: dict[tuple[str, str], str]) -> bool:
    try:
        _component(name, children)
    except AssertionError:
        return False
    return True


def _flatten(payload: dict[str, Any], children: dict[tuple[str, str], str]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        if key == "ChangeEventHeader":
            continue
        if isinstance(value, dict):
            for child, child_value in value.items():
                if child_value is None and not _has_component(f"{key}.{child}", children):
                    continue  # e.g. Address.StateCode: in the Avro record, not in describe
                flat[_component(f"{key}.{child}", children)] = child_value
        elif any(p == key for p, _ in children) and value is None:
            continue  # an unset compound: its components stay unset
        else:
            flat[key] = value
    return flat


def bulk_rows(sf: Salesforce, obj: str, soql: str) -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    for page in getattr(sf.bulk2, obj).query_all(soql, max_records=2, wait=0.1):
        for row in csv.DictReader(io.StringIO(page)):
            rows[row["Id"]] = row
    return rows


@pytest.mark.slow
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
def test_bulk_and_rest_equal_the_truth_and_cdc_replay_differs_exactly_where_cdc_is_blind(
    history: History,
    org: EmulatorServer,
    sf: Salesforce,
    pubsub: pb2_grpc.PubSubStub,
    describes: dict[str, dict[str, Any]],
    parent_ids: list[str],
) -> None:
    obj = history.obj
    assert org.store is not None
    describe = describes[obj]
    types = {f["name"]: f["type"] for f in describe["fields"] if f["type"] != "address"}
    formulas = {f["name"] for f in describe["fields"] if f["calculated"] and f["calculatedFormula"]}
    fields = sorted(types)

    def snapshot(ids: list[str]) -> dict[str, dict[str, Any]]:
        assert org.store is not None
        return {
            row["Id"]: {k: _norm(types[k], v) for k, v in row.items() if k in types}
            for row in org.store.truth(obj).to_pylist()
            if row["Id"] in ids
        }

    before = org.store.latest_replay_id()
    try:
        applied = apply(org, history, parent_ids, snapshot)
    finally:
        org.store.faults.drop_events(0)
    ids = applied.ids
    truth = snapshot(ids)
    assert set(truth) == set(ids) - applied.purged

    id_list = ", ".join(f"'{i}'" for i in ids)
    soql = f"SELECT {', '.join(fields)} FROM {obj} WHERE Id IN ({id_list})"
    rest = {
        r["Id"]: {k: _norm(types[k], r[k]) for k in fields}
        for r in sf.query_all(soql, include_deleted=True)["records"]
    }
    bulk = {
        rid: {k: _norm(types[k], r[k]) for k in fields}
        for rid, r in bulk_rows(sf, obj, soql).items()
    }
    assert rest == truth
    assert bulk == truth

    # CDC carries neither SystemModstamp nor IsDeleted's value as a field (§2.3): fold
    # every field the events carry, and IsDeleted as the fold of DELETE/UNDELETE.
    events = org.store.events_after(before, [obj], 10**6)
    until = events[-1].replay_id if events else before
    cdc = cdc_state(pubsub, org, obj, ids, before, until, describe)
    assert set(cdc) == set(ids)  # the creates are always delivered
    delivered = applied.before_loss if applied.before_loss is not None else truth
    expected: set[tuple[str, str]] = set()
    got: set[tuple[str, str]] = set()
    for rid, row in cdc.items():
        assert "SystemModstamp" not in row
        assert formulas <= set(row)  # in every CREATE body, as null
        if rid in applied.purged:
            expected.add((rid, "<purged: no event>"))
            got.add((rid, "<purged: no event>"))  # the fold still holds it; truth has not
            continue
        for k, v in row.items():
            if _norm(types[k], v) != truth[rid][k]:
                got.add((rid, k))
            if k in formulas:
                blind = truth[rid][k] is not None  # never carried: null in the fold
            else:
                blind = delivered[rid][k] != truth[rid][k]  # changed by lost events only
            if blind:
                expected.add((rid, k))
    assert got == expected


def test_truth_cli_writes_parquet_while_the_server_holds_the_org(
    org: EmulatorServer, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    from sfdc_emulator.cli import main

    assert org.store is not None
    org.write_info(org.store.state_dir / "emulator.json")
    out = tmp_path / "acc.parquet"
    assert (
        main(
            [
                "truth",
                "--state-dir",
                str(org.store.state_dir),
                "--object",
                "Account",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    table = pq.read_table(out)
    assert table.num_rows == org.store.count("Account", include_deleted=True)
    assert "BillingCity" in table.column_names


def test_a_delete_in_a_later_second_than_the_create_replays_to_the_truth(
    org: EmulatorServer,
    pubsub: pb2_grpc.PubSubStub,
    describes: dict[str, dict[str, Any]],
) -> None:
    """Regression (issue 10 item 6): a delete stamps LastModifiedDate/ById, its header-only
    DELETE event cannot carry them, so the replay takes them from the commit second and
    commitUser as the sync does. A fold that kept the create's stamp passed only while
    both commits fell in the same second, and failed under load."""
    assert org.store is not None
    before = org.store.latest_replay_id()
    created = org.store.commit([Mutation("create", "Account", values={"Name": "boundary"})])
    (rid,) = created.ids
    org.store.advance_clock(1.0)  # the delete lands in a later second, every time
    deleted = org.store.commit([Mutation("delete", "Account", id=rid)])
    until = org.store.latest_replay_id()
    describe = describes["Account"]
    types = {f["name"]: f["type"] for f in describe["fields"] if f["type"] != "address"}
    (truth_row,) = [r for r in org.store.truth("Account").to_pylist() if r["Id"] == rid]
    truth = {k: _norm(types[k], v) for k, v in truth_row.items() if k in types}
    assert truth["LastModifiedDate"] == deleted.commit_ts - deleted.commit_ts % 1000
    assert truth["LastModifiedDate"] != created.commit_ts - created.commit_ts % 1000

    row = cdc_state(pubsub, org, "Account", [rid], before, until, describe)[rid]
    got = {k: _norm(types[k], v) for k, v in row.items()}
    assert got == {k: v for k, v in truth.items() if k in row}
    assert got["IsDeleted"] is True
