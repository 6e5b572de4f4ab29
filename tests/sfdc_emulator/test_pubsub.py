"""The emulator's Pub/Sub API against a real grpcio client and a real OrgStore.

Every test talks to a started ``PubSubServer`` over a real channel on 127.0.0.1 with the
generated stub, decodes payloads with fastavro using the schema fetched by GetSchema, and
reads CDC bitmaps with an independent implementation of the documented algorithm.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import grpc
import pytest

from resources.salesforce.pubsub_api import pubsub_api_pb2 as pb2
from resources.salesforce.pubsub_api import pubsub_api_pb2_grpc as pb2_grpc
from sfdc_emulator import store as store_module
from sfdc_emulator.describe import ADDRESS_PARTS, FieldDef
from sfdc_emulator.pubsub.server import PubSubServer, decode_replay_id, encode_replay_id
from sfdc_emulator.store import Mutation, OrgStore
from sfdc_emulator.tls import ensure_tls
from tests.sfdc_emulator.pubsub_fixtures import (
    CHANNELS,
    TENANT_ID,
    TOKEN,
    SchemaCache,
    SubscribeClient,
    auth_metadata,
    bitmap_field_names,
    error_code,
    replay_bytes,
    replay_int,
)

P = "sfdc.platform.eventbus.grpc."
KEEPALIVE_S = 0.4


@pytest.fixture
def org(store: OrgStore) -> OrgStore:
    """The core's seeded OrgStore (conftest ``store``: rows, no events yet)."""
    assert store.latest_replay_id() == 0
    return store


def _server(org: OrgStore, **kwargs: object) -> PubSubServer:
    options: dict[str, object] = {
        "keepalive_s": KEEPALIVE_S,
        "idle_timeout_s": 30.0,
        "poll_interval_s": 0.02,
    }
    options.update(kwargs)
    return PubSubServer(
        org, org.faults, TENANT_ID, {TOKEN}, CHANNELS, "127.0.0.1", 0, **options
    ).start()


@pytest.fixture
def server(org: OrgStore) -> Iterator[PubSubServer]:
    srv = _server(org)
    yield srv
    srv.stop(grace=0)


@pytest.fixture
def stub(server: PubSubServer) -> Iterator[pb2_grpc.PubSubStub]:
    channel = grpc.insecure_channel(server.target)
    yield pb2_grpc.PubSubStub(channel)
    channel.close()


@pytest.fixture
def schemas(stub: pb2_grpc.PubSubStub) -> SchemaCache:
    return SchemaCache(stub)


def _accounts(org: OrgStore, n: int, prefix: str = "Acct") -> list[str]:
    result = org.commit(
        [Mutation("create", "Account", values={"Name": f"{prefix}{i}"}) for i in range(n)]
    )
    return result.ids


def _mixed_traffic(org: OrgStore) -> None:
    """Several transactions over several objects (creates, updates, deletes)."""
    ids = _accounts(org, 120)
    org.commit([Mutation("create", "Contact", values={"LastName": f"L{i}"}) for i in range(40)])
    org.commit([Mutation("update", "Account", ids[i], {"Description": f"d{i}"}) for i in range(30)])
    org.commit([Mutation("delete", "Account", ids[i]) for i in range(100, 110)])
    org.commit([Mutation("create", "Task", values={"Subject": f"T{i}"}) for i in range(15)])


def _all_stored(org: OrgStore) -> list[store_module.StoredEvent]:
    return org.events_after(0, None, 1_000_000)


def _wait_for_error(client: SubscribeClient) -> grpc.RpcError:
    err = client.error(timeout=5)
    assert "rpcId: " in err.details()
    return err


def test_get_topic_single_object_and_schema(org: OrgStore, stub: pb2_grpc.PubSubStub) -> None:
    info = stub.GetTopic(
        pb2.TopicRequest(topic_name="/data/AccountChangeEvent"), metadata=auth_metadata()
    )
    assert info.topic_name == "/data/AccountChangeEvent"
    assert info.tenant_guid == TENANT_ID
    assert (info.can_publish, info.can_subscribe) == (False, True)
    assert info.schema_id == org.current_schema_id("Account")
    assert info.rpc_id

    schema = stub.GetSchema(pb2.SchemaRequest(schema_id=info.schema_id), metadata=auth_metadata())
    assert schema.schema_id == info.schema_id
    parsed = json.loads(schema.schema_json)
    assert parsed["name"] == "AccountChangeEvent"
    assert parsed["namespace"] == "com.sforce.eventbus"
    assert parsed["fields"][0]["name"] == "ChangeEventHeader"


def test_get_topic_channels_and_all_changes(org: OrgStore, stub: pb2_grpc.PubSubStub) -> None:
    md = auth_metadata()
    revenue = stub.GetTopic(pb2.TopicRequest(topic_name="/data/RevenueChannel__chn"), metadata=md)
    assert revenue.schema_id == org.current_schema_id("Opportunity")
    everything = stub.GetTopic(pb2.TopicRequest(topic_name="/data/ChangeEvents"), metadata=md)
    assert everything.schema_id == org.current_schema_id(org.schema.names()[0])
    task = stub.GetTopic(pb2.TopicRequest(topic_name="/data/TaskChangeEvent"), metadata=md)
    assert task.schema_id == org.current_schema_id("Task")


@pytest.mark.parametrize(
    "topic",
    ["/data/NopeChangeEvent", "/data/accountchangeevent", "/event/Foo__e", "", "/data/X__chn"],
)
def test_unknown_topic_is_not_found(stub: pb2_grpc.PubSubStub, topic: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.GetTopic(pb2.TopicRequest(topic_name=topic), metadata=auth_metadata())
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_code(info.value) == P + "topic.not.found"
    assert "rpcId: " in info.value.details()


def test_unknown_schema_id_is_not_found(stub: pb2_grpc.PubSubStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSchema(
            pb2.SchemaRequest(schema_id="AAAAAAAAAAAAAAAAAAAAAA"), metadata=auth_metadata()
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_code(info.value) == P + "schema.not.found"


@pytest.mark.parametrize(
    "metadata",
    [
        auth_metadata(token="not-a-token"),
        auth_metadata(tenant="00D000000000000AAA"),
        (("accesstoken", TOKEN), ("tenantid", TENANT_ID)),
        (),
    ],
    ids=["bad-token", "wrong-tenant", "no-instanceurl", "no-headers"],
)
def test_bad_auth_is_auth_error(
    stub: pb2_grpc.PubSubStub, metadata: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.GetTopic(pb2.TopicRequest(topic_name="/data/ChangeEvents"), metadata=metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_code(info.value) == P + "service.auth.error"
    assert "not-a-token" not in info.value.details()


def test_subscribe_with_bad_token_fails_with_auth_trailer(
    org: OrgStore, stub: pb2_grpc.PubSubStub
) -> None:
    _accounts(org, 3)
    client = SubscribeClient(
        stub, "/data/ChangeEvents", pb2.EARLIEST, metadata=auth_metadata(token="expired")
    )
    err = _wait_for_error(client)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_code(err) == P + "service.auth.error"


def test_publish_and_managed_subscribe_fail_cleanly(stub: pb2_grpc.PubSubStub) -> None:
    md = auth_metadata()
    with pytest.raises(grpc.RpcError) as info:
        stub.Publish(
            pb2.PublishRequest(topic_name="/data/AccountChangeEvent", events=[pb2.ProducerEvent()]),
            metadata=md,
        )
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error_code(info.value)

    responses = stub.PublishStream(
        iter([pb2.PublishRequest(topic_name="/data/ChangeEvents")]), metadata=md
    )
    with pytest.raises(grpc.RpcError) as info:
        list(responses)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED

    managed = stub.ManagedSubscribe(iter([pb2.ManagedFetchRequest(num_requested=1)]), metadata=md)
    with pytest.raises(grpc.RpcError) as info:
        list(managed)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_earliest_delivers_every_event_once_in_replay_order(
    org: OrgStore, stub: pb2_grpc.PubSubStub, schemas: SchemaCache
) -> None:
    _mixed_traffic(org)
    stored = _all_stored(org)
    assert len(stored) == 120 + 40 + 30 + 1 + 15  # the 10 deletes merge into one event

    client = SubscribeClient(stub, "/data/ChangeEvents", pb2.EARLIEST, num_requested=100)
    try:
        events, responses = client.collect_events(len(stored))
        assert [replay_int(e.replay_id) for e in events] == [s.replay_id for s in stored]
        assert [e.event.id for e in events] == [s.event_uuid for s in stored]
        assert len({e.event.id for e in events}) == len(events)
        for event, st in zip(events, stored, strict=True):
            header = schemas.decode(event)["ChangeEventHeader"]
            assert header["entityName"] == st.entity
            assert header["changeType"] == st.change_type
        for resp in responses:
            if resp.events:
                assert resp.latest_replay_id == resp.events[-1].replay_id
        # nothing more: the next response is a keepalive with the log's latest id
        resp = client.next_response(timeout=KEEPALIVE_S * 5)
        assert not resp.events
        assert replay_int(resp.latest_replay_id) == org.latest_replay_id()
    finally:
        client.close()


def test_change_types_decode(
    org: OrgStore, stub: pb2_grpc.PubSubStub, schemas: SchemaCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    acct = org.schema.get("Account")
    industry = acct.field("Industry").picklist_values[0]
    created = org.commit(
        [
            Mutation(
                "create",
                "Account",
                values={
                    "Name": "Acme",
                    "Industry": industry,
                    "AnnualRevenue": 1234.5,
                    "NumberOfEmployees": 42,
                    "Phone": "+1 555 0100",
                    "Description": "first",
                    "BillingStreet": "1 Main St",
                    "BillingCity": "Paris",
                    "BillingCountry": "France",
                    "BillingLatitude": 48.85,
                },
            )
        ]
    )
    acct_id = created.ids[0]
    org.commit(
        [
            Mutation(
                "update",
                "Account",
                acct_id,
                {"BillingCity": "Lyon", "Phone": None, "Description": "second"},
            )
        ]
    )
    org.commit([Mutation("delete", "Account", acct_id)])
    org.commit([Mutation("undelete", "Account", acct_id)])
    pair = _accounts(org, 2, prefix="Pair")
    org.commit([Mutation("update", "Account", rid, {"Rating": "Hot"}) for rid in pair])
    contact = org.commit([Mutation("create", "Contact", values={"LastName": "Lovelace"})]).ids[0]
    org.commit([Mutation("update", "Contact", contact, {"FirstName": "Ada"})])
    org.gap("Account", pair, {"Description": "changed outside the app server"})
    monkeypatch.setattr(store_module, "OVERFLOW_LIMIT", 3)
    org.commit(
        [Mutation("create", "Contact", values={"LastName": f"O{i}"}) for i in range(4)]
        + [Mutation("create", "Task", values={"Subject": "over"})]
    )
    total = len(_all_stored(org))

    client = SubscribeClient(stub, "/data/ChangeEvents", pb2.EARLIEST)
    try:
        events, _ = client.collect_events(total)
    finally:
        client.close()
    decoded = [(schemas.decode(e), schemas.raw[e.event.schema_id]) for e in events]
    kinds = [d["ChangeEventHeader"]["changeType"] for d, _ in decoded]
    assert kinds == [
        "CREATE",
        "UPDATE",
        "DELETE",
        "UNDELETE",
        "CREATE",
        "CREATE",
        "UPDATE",
        "CREATE",
        "UPDATE",
        "GAP_UPDATE",
        "CREATE",
        "CREATE",
        "CREATE",
        "GAP_OVERFLOW",
        "GAP_OVERFLOW",
    ]
    (create, schema), (update, _), (delete, _), (undelete, _) = decoded[:4]

    # CREATE: every field, compounds nested, numbers as numbers
    assert create["ChangeEventHeader"]["recordIds"] == [acct_id]
    assert create["ChangeEventHeader"]["changedFields"] == []
    assert create["Name"] == "Acme"
    assert create["Industry"] == industry
    assert create["AnnualRevenue"] == 1234.5
    assert create["NumberOfEmployees"] == 42
    assert create["BillingAddress"]["City"] == "Paris"
    assert create["BillingAddress"]["Latitude"] == 48.85
    assert isinstance(create["CreatedDate"], int)
    assert "SystemModstamp" not in create and "IsDeleted" not in create

    # UPDATE: changed fields only, bitmaps name them (child bitmap for the address part)
    header = update["ChangeEventHeader"]
    changed = bitmap_field_names(schema, header["changedFields"])
    assert {"BillingAddress.City", "Phone", "Description"} <= set(changed)
    assert bitmap_field_names(schema, header["nulledFields"]) == ["Phone"]
    names = [f["name"] for f in schema["fields"]]
    city_bitmap = f"{names.index('BillingAddress')}-0x{1 << ADDRESS_PARTS.index('City'):02X}"
    assert city_bitmap in header["changedFields"]
    assert update["Description"] == "second"
    assert update["Name"] is None  # unchanged -> null even though the record has a value
    assert update["Phone"] is None
    assert update["BillingAddress"]["City"] == "Lyon"
    assert update["BillingAddress"]["Street"] is None

    # DELETE: header only
    assert delete["ChangeEventHeader"]["recordIds"] == [acct_id]
    assert all(v is None for k, v in delete.items() if k != "ChangeEventHeader")

    # UNDELETE: the restored record
    assert undelete["Name"] == "Acme"
    assert undelete["BillingAddress"]["City"] == "Lyon"

    # merged: identical change to two records in one transaction -> one event, two ids
    merged, merged_schema = decoded[6]
    assert sorted(merged["ChangeEventHeader"]["recordIds"]) == sorted(pair)
    assert "Rating" in bitmap_field_names(
        merged_schema, merged["ChangeEventHeader"]["changedFields"]
    )
    assert merged["Rating"] == "Hot"

    # person-name compound child bitmap
    name_update, contact_schema = decoded[8]
    assert "Name.FirstName" in bitmap_field_names(
        contact_schema, name_update["ChangeEventHeader"]["changedFields"]
    )
    assert name_update["Name"]["FirstName"] == "Ada"

    # GAP_UPDATE: record ids, no field data
    gap, _ = decoded[9]
    assert sorted(gap["ChangeEventHeader"]["recordIds"]) == sorted(pair)
    assert gap["Description"] is None

    # GAP_OVERFLOW: one per entity beyond the limit, no record ids
    overflow = [d for d, _ in decoded[13:]]
    assert {d["ChangeEventHeader"]["entityName"] for d in overflow} == {"Contact", "Task"}
    assert all(d["ChangeEventHeader"]["recordIds"] == [] for d in overflow)


def test_flow_control_never_exceeds_outstanding(org: OrgStore, stub: pb2_grpc.PubSubStub) -> None:
    _accounts(org, 300)
    client = SubscribeClient(stub, "/data/AccountChangeEvent", pb2.EARLIEST, num_requested=5)
    try:
        first = client.next_response()
        assert len(first.events) == 5 and first.pending_num_requested == 0
        idle = client.next_response(timeout=KEEPALIVE_S * 5)
        assert not idle.events and idle.pending_num_requested == 0
        # an up-to-date client may store a keepalive's id: it must not skip undelivered events
        assert replay_int(idle.latest_replay_id) == replay_int(first.events[-1].replay_id)

        client.request(250)  # capped at 100 outstanding
        got = 0
        while got < 100:
            resp = client.next_response()
            got += len(resp.events)
            assert resp.pending_num_requested == 100 - got
        assert got == 100
        idle = client.next_response(timeout=KEEPALIVE_S * 5)
        assert not idle.events

        client.request(30)
        client.request(40)  # additive
        got = 0
        while got < 70:
            resp = client.next_response()
            got += len(resp.events)
            assert resp.pending_num_requested >= 0
        assert got == 70
        assert not client.next_response(timeout=KEEPALIVE_S * 5).events
    finally:
        client.close()


def test_keepalive_carries_latest_and_new_events_arrive_live(
    org: OrgStore, stub: pb2_grpc.PubSubStub
) -> None:
    _accounts(org, 10)
    client = SubscribeClient(stub, "/data/ChangeEvents", pb2.LATEST, num_requested=10)
    try:
        started = time.monotonic()
        keepalive = client.next_response(timeout=KEEPALIVE_S * 5)
        assert not keepalive.events
        assert time.monotonic() - started >= KEEPALIVE_S * 0.8
        assert replay_int(keepalive.latest_replay_id) == org.latest_replay_id() == 10
        assert keepalive.pending_num_requested == 10

        committed = time.monotonic()
        new_id = _accounts(org, 1, prefix="Live")[0]
        resp = client.next_response(timeout=KEEPALIVE_S * 5)
        while not resp.events:
            resp = client.next_response(timeout=KEEPALIVE_S * 5)
        assert time.monotonic() - committed < 1.0
        assert replay_int(resp.events[0].replay_id) == 11
        assert resp.pending_num_requested == 9
        assert new_id in SchemaCache(stub).decode(resp.events[0])["ChangeEventHeader"]["recordIds"]
    finally:
        client.close()


def test_resume_custom_continues_exactly_after_stored_replay_id(
    org: OrgStore, stub: pb2_grpc.PubSubStub
) -> None:
    _accounts(org, 60)
    org.commit([Mutation("create", "Contact", values={"LastName": f"C{i}"}) for i in range(60)])
    stored = [s.replay_id for s in _all_stored(org)]

    first = SubscribeClient(stub, "/data/ChangeEvents", pb2.EARLIEST, num_requested=45)
    try:
        events, _ = first.collect_events(45, rerequest=False)
    finally:
        first.close()
    checkpoint = events[-1].replay_id
    assert replay_int(checkpoint) == stored[44]

    resumed = SubscribeClient(stub, "/data/ChangeEvents", pb2.CUSTOM, replay_id=checkpoint)
    try:
        rest, _ = resumed.collect_events(len(stored) - 45)
        assert [replay_int(e.replay_id) for e in rest] == stored[45:]
        assert not resumed.next_response(timeout=KEEPALIVE_S * 5).events
    finally:
        resumed.close()


def test_expired_replay_id_is_corrupted_after_73_hours(
    org: OrgStore, stub: pb2_grpc.PubSubStub
) -> None:
    _accounts(org, 5)
    old = replay_bytes(2)
    org.advance_clock(73 * 3600)
    client = SubscribeClient(stub, "/data/ChangeEvents", pb2.CUSTOM, replay_id=old)
    err = _wait_for_error(client)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code(err) == P + "subscription.fetch.replayid.corrupted"

    # the tip is still a valid position: nothing between it and the present expired
    tip = SubscribeClient(stub, "/data/ChangeEvents", pb2.CUSTOM, replay_id=replay_bytes(5))
    try:
        _accounts(org, 1, prefix="After")
        resp = tip.next_response()
        while not resp.events:
            resp = tip.next_response()
        assert replay_int(resp.events[0].replay_id) == 6
    finally:
        tip.close()


@pytest.mark.parametrize(
    ("preset", "replay_id", "num_requested", "code"),
    [
        (pb2.CUSTOM, b"\x00\x01", 10, "subscription.fetch.replayid.corrupted"),
        (pb2.CUSTOM, replay_bytes(10**6), 10, "subscription.fetch.replayid.corrupted"),
        (pb2.CUSTOM, b"", 10, "subscription.fetch.replayid.validation.failed"),
        (pb2.EARLIEST, b"", 0, "subscription.fetch.requested.events.invalid"),
        (pb2.LATEST, b"", -5, "subscription.fetch.requested.events.invalid"),
    ],
    ids=["short-id", "beyond-latest", "custom-without-id", "zero-requested", "negative"],
)
def test_invalid_first_fetch_request(
    org: OrgStore,
    stub: pb2_grpc.PubSubStub,
    preset: int,
    replay_id: bytes,
    num_requested: int,
    code: str,
) -> None:
    _accounts(org, 3)
    client = SubscribeClient(
        stub, "/data/ChangeEvents", preset, replay_id=replay_id, num_requested=num_requested
    )
    err = _wait_for_error(client)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code(err) == P + code


def test_topic_change_or_bad_request_mid_stream(org: OrgStore, stub: pb2_grpc.PubSubStub) -> None:
    _accounts(org, 3)
    client = SubscribeClient(stub, "/data/ChangeEvents", pb2.EARLIEST, num_requested=3)
    assert len(client.next_response().events) == 3
    client.request(5, topic="/data/ChangeEvents")  # same topic: fine
    client.request(5, topic="/data/AccountChangeEvent")
    err = _wait_for_error(client)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code(err) == P + "subscription.fetch.topic.mismatch"

    client = SubscribeClient(stub, "/data/ChangeEvents", pb2.LATEST, num_requested=3)
    client.request(0)
    err = _wait_for_error(client)
    assert error_code(err) == P + "subscription.fetch.requested.events.invalid"


def test_channel_topics_deliver_only_their_objects(
    org: OrgStore, stub: pb2_grpc.PubSubStub, schemas: SchemaCache
) -> None:
    opp = org.commit(
        [
            Mutation(
                "create",
                "Opportunity",
                values={"Name": "Deal", "StageName": "Prospecting", "CloseDate": date(2025, 1, 31)},
            )
        ]
    ).ids[0]
    org.commit(
        [
            Mutation("create", "Account", values={"Name": "A"}),
            Mutation("create", "Contact", values={"LastName": "C"}),
            Mutation("create", "Task", values={"Subject": "Call"}),
            Mutation(
                "create",
                "Event",
                values={
                    "Subject": "Meet",
                    "ActivityDateTime": datetime(2025, 1, 2, 10),
                    "DurationInMinutes": 30,
                },
            ),
            Mutation("update", "Opportunity", opp, {"Description": "x"}),
        ]
    )
    expected = {
        "/data/ActivityChannel__chn": ["Task", "Event"],
        "/data/RevenueChannel__chn": ["Opportunity", "Account", "Opportunity"],
        "/data/ContactChangeEvent": ["Contact"],
    }
    for topic, entities in expected.items():
        client = SubscribeClient(stub, topic, pb2.EARLIEST)
        try:
            events, _ = client.collect_events(len(entities))
            got = [schemas.decode(e)["ChangeEventHeader"]["entityName"] for e in events]
            assert got == entities, topic
            keepalive = client.next_response(timeout=KEEPALIVE_S * 5)
            assert not keepalive.events
            assert replay_int(keepalive.latest_replay_id) == org.latest_replay_id()
        finally:
            client.close()


def test_schema_change_mid_stream_every_schema_id_resolves(
    org: OrgStore, stub: pb2_grpc.PubSubStub, schemas: SchemaCache
) -> None:
    ids = _accounts(org, 2)
    org.schema.add_field("Account", FieldDef(name="Tier2__c", type="string", label="Tier 2"))
    org.commit([Mutation("update", "Account", ids[0], {"Tier2__c": "gold"})])
    client = SubscribeClient(stub, "/data/AccountChangeEvent", pb2.EARLIEST)
    try:
        events, _ = client.collect_events(3)
    finally:
        client.close()
    assert len({e.event.schema_id for e in events}) == 2
    assert schemas.decode(events[2])["Tier2__c"] == "gold"
    topic = stub.GetTopic(
        pb2.TopicRequest(topic_name="/data/AccountChangeEvent"), metadata=auth_metadata()
    )
    assert topic.schema_id == events[2].event.schema_id


def test_two_subscribers_each_get_everything(org: OrgStore, stub: pb2_grpc.PubSubStub) -> None:
    _accounts(org, 150)
    clients = [SubscribeClient(stub, "/data/ChangeEvents", pb2.EARLIEST) for _ in range(2)]
    try:
        for client in clients:
            events, _ = client.collect_events(150)
            assert [replay_int(e.replay_id) for e in events] == list(range(1, 151))
    finally:
        for client in clients:
            client.close()


def test_idle_stream_is_closed(org: OrgStore) -> None:
    _accounts(org, 3)
    srv = _server(org, idle_timeout_s=0.3, keepalive_s=5.0)
    channel = grpc.insecure_channel(srv.target)
    try:
        client = SubscribeClient(
            pb2_grpc.PubSubStub(channel), "/data/ChangeEvents", pb2.EARLIEST, num_requested=3
        )
        assert len(client.next_response().events) == 3
        started = time.monotonic()
        assert client.next(timeout=3) is None  # stream ended
        assert 0.2 < time.monotonic() - started < 2.0
    finally:
        channel.close()
        srv.stop(grace=0)


def test_pubsub_error_fault(org: OrgStore, stub: pb2_grpc.PubSubStub) -> None:
    org.faults.pubsub_error(count=1)
    with pytest.raises(grpc.RpcError) as info:
        stub.GetTopic(pb2.TopicRequest(topic_name="/data/ChangeEvents"), metadata=auth_metadata())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_code(info.value) == P + "service.unavailable"
    # consumed: the next call succeeds
    stub.GetTopic(pb2.TopicRequest(topic_name="/data/ChangeEvents"), metadata=auth_metadata())


def test_duplicate_on_resubscribe_fault(org: OrgStore, stub: pb2_grpc.PubSubStub) -> None:
    _accounts(org, 20)
    org.faults.duplicate_on_resubscribe(3)
    client = SubscribeClient(stub, "/data/ChangeEvents", pb2.CUSTOM, replay_id=replay_bytes(10))
    try:
        events, _ = client.collect_events(13)
        assert [replay_int(e.replay_id) for e in events] == list(range(8, 21))
    finally:
        client.close()
    # only once
    client = SubscribeClient(stub, "/data/ChangeEvents", pb2.CUSTOM, replay_id=replay_bytes(10))
    try:
        assert replay_int(client.next_response().events[0].replay_id) == 11
    finally:
        client.close()


def test_a_dropped_event_is_delivered_on_no_channel_and_never_replayed(
    org: OrgStore, stub: pb2_grpc.PubSubStub, schemas: SchemaCache
) -> None:
    """Salesforce loses change events "in rare cases": never delivered, not replayable."""
    (kept,) = _accounts(org, 1, prefix="Kept")
    org.faults.drop_events(1.0, count=1)
    lost = org.commit([Mutation("update", "Account", kept, {"Phone": "555-0100"})])
    after = org.commit([Mutation("update", "Account", kept, {"Fax": "555-0199"})])
    assert lost.replay_ids == [] and lost.dropped_ids == [kept]
    assert org.get("Account", kept)["Phone"] == "555-0100"  # type: ignore[index]  # committed
    # the log holds the create and the later update, nothing in between
    assert [e.replay_id for e in _all_stored(org)] == [1, after.replay_ids[0]]
    for topic in ("/data/ChangeEvents", "/data/AccountChangeEvent", "/data/RevenueChannel__chn"):
        for preset, replay in ((pb2.EARLIEST, b""), (pb2.CUSTOM, replay_bytes(1))):
            client = SubscribeClient(stub, topic, preset, replay_id=replay)
            try:
                wanted = 2 if preset == pb2.EARLIEST else 1
                events, _ = client.collect_events(wanted)
                bodies = [schemas.decode(e) for e in events]
                assert all(b["Phone"] is None for b in bodies), topic
                assert bodies[-1]["Fax"] == "555-0199"
                keepalive = client.next_response(timeout=KEEPALIVE_S * 5)
                assert not keepalive.events, topic
            finally:
                client.close()


def test_slow_delivery_fault(org: OrgStore, stub: pb2_grpc.PubSubStub) -> None:
    _accounts(org, 5)
    org.faults.slow("pubsub", 0.5, count=1)
    started = time.monotonic()
    client = SubscribeClient(stub, "/data/ChangeEvents", pb2.EARLIEST)
    try:
        assert len(client.next_response().events) == 5
        assert time.monotonic() - started >= 0.45
    finally:
        client.close()


def test_delivery_allocation_exceeded(
    org: OrgStore, server: PubSubServer, stub: pb2_grpc.PubSubStub
) -> None:
    _accounts(org, 30)
    server.delivery_limit = 25
    client = SubscribeClient(stub, "/data/ChangeEvents", pb2.EARLIEST, num_requested=100)
    got = 0
    while True:
        item = client.next()
        if isinstance(item, grpc.RpcError):
            break
        assert item is not None
        got += len(item.events)
    assert got == 25
    assert item.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_code(item) == P + "subscription.limit.exceeded"
    assert server.delivered_last_24h() == 25
    org.advance_clock(24 * 3600 + 1)
    assert server.delivered_last_24h() == 0


def test_tls_endpoint(org: OrgStore, tmp_path: Path) -> None:
    material = ensure_tls(tmp_path / "tls-state")
    srv = _server(
        org, tls=True, cert_pem=material.cert_chain_pem(), key_pem=material.private_key_pem()
    )
    creds = grpc.ssl_channel_credentials(root_certificates=material.ca_bundle.read_bytes())
    channel = grpc.secure_channel(f"localhost:{srv.port}", creds)
    try:
        stub = pb2_grpc.PubSubStub(channel)
        info = stub.GetTopic(
            pb2.TopicRequest(topic_name="/data/ChangeEvents"), metadata=auth_metadata()
        )
        assert info.can_subscribe
        _accounts(org, 2)
        client = SubscribeClient(stub, "/data/ChangeEvents", pb2.EARLIEST)
        try:
            assert len(client.next_response().events) == 2
        finally:
            client.close()
    finally:
        channel.close()
        srv.stop(grace=0)


def test_replay_id_codec() -> None:
    assert encode_replay_id(37 * 65536 + 132 * 256 + 136) == bytes([0, 0, 0, 0, 0, 37, 132, 136])
    assert decode_replay_id(encode_replay_id(2**64 - 1)) == 2**64 - 1
    assert decode_replay_id(b"\x01") is None
