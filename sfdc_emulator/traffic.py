"""Live change traffic: a background thread committing realistic user and automation changes.

Besides the steady mix (creates, partial user updates, deletes, undeletes, occasional
purges) a share of user updates is followed 1-4 seconds later by an automated change of the
same record, LastModifiedDate untouched and SystemModstamp moved to that later second —
the case that separates SystemModstamp from LastModifiedDate. Most are a flow or trigger
setting a field (an UPDATE event, changeOrigin "", the Automated Process user); the rest
are recalculations (workflow re-evaluation, roll-up summary) that change no field an event
reports, so the new SystemModstamp is published by no event at all: only a read finds it.
The admin endpoint uses the one-shot methods (update/delete/undelete/purge/overflow/gap).
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sfdc_emulator import ids as idmod
from sfdc_emulator.describe import (
    LEAD_SOURCES,
    OPPORTUNITY_STAGES,
    TASK_PRIORITIES,
)
from sfdc_emulator.generator import (
    COMPANY_A,
    COMPANY_B,
    EVENT_SUBJECTS,
    FIRST_NAMES,
    LAST_NAMES,
    TASK_SUBJECTS,
)
from sfdc_emulator.store import OVERFLOW_LIMIT, CommitResult, Mutation, OrgStore, StoreError
from sfdc_emulator.tables import SMALL_IN

log = logging.getLogger(__name__)

DEFAULT_OPS = {"create": 0.25, "update": 0.55, "delete": 0.1, "undelete": 0.07, "purge": 0.03}
DEFAULT_OBJECTS = {
    "Opportunity": 0.3,
    "Task": 0.22,
    "Event": 0.08,
    "Account": 0.1,
    "Contact": 0.12,
    "Lead": 0.08,
    "OpportunityLineItem": 0.1,
}
# Share of user updates followed by an automation update, and its delay (wall seconds):
# at least 1 s, so the automation's SystemModstamp is a later second than the user's.
AUTOMATION_SHARE = 0.3
AUTOMATION_DELAY = (1.0, 4.0)
# Share of those automation updates that are recalculations touching no field (no event).
RECALCULATION_SHARE = 0.3
# How long the live Users' Ids picked for user updates are reused (wall seconds).
USERS_TTL_S = 5.0


@dataclass
class Mix:
    """What the traffic does: operation weights, object weights, automation follow-ups."""

    ops: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_OPS))
    objects: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_OBJECTS))
    automation_share: float = AUTOMATION_SHARE
    automation_delay: tuple[float, float] = AUTOMATION_DELAY
    recalculation_share: float = RECALCULATION_SHARE


class TrafficGenerator:
    """Commits ``rate`` transactions per second (on average) until :meth:`stop`."""

    def __init__(
        self,
        store: OrgStore,
        rate: float,
        seed: int = 0,
        mix: Mix | Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.rate = float(rate)
        if isinstance(mix, Mapping):
            mix = Mix(**mix)
        self.mix = mix or Mix()
        self.rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # (due, seq, object, id, recalculation)
        self._automation: list[tuple[float, int, str, str, bool]] = []
        self._automation_seq = 0
        self._recently_deleted: dict[str, deque[str]] = {}
        self._lock = threading.RLock()  # the rng and queues: the admin may call concurrently
        # the live Users' Ids, (monotonic time read, User Id counter then, Ids)
        self._users: tuple[float, int, list[str]] | None = None
        self.stats: dict[str, int] = {}

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sfdc-traffic", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self._run_due_automation()
                if self.rate > 0 and time.monotonic() >= next_at:
                    self.step()
                    # Poisson arrivals: exponential gaps with mean 1/rate
                    next_at += self.rng.expovariate(self.rate)
                    next_at = max(next_at, time.monotonic() - 1.0)
            except Exception:
                # keep the org alive: one failed transaction must not stop the traffic
                log.exception("traffic step failed")
            wait = 0.05 if self.rate <= 0 else min(0.05, max(0.0, next_at - time.monotonic()))
            self._stop.wait(wait)

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def step(self) -> CommitResult | None:
        """One random transaction of the mix (also used directly by tests)."""
        with self._lock:
            op = self._weighted(self.mix.ops)
            obj = self._weighted(self.mix.objects)
        try:
            if op == "create":
                result = self.store.commit(
                    [Mutation("create", obj, values=self._create_values(obj))]
                )
            elif op == "update":
                picked = self.random_ids(obj, 1)
                if not picked:
                    return None
                result = self.store.commit(
                    [Mutation("update", obj, picked[0], self._update_values(obj))],
                    user_id=self._random_user(),
                )
                self._schedule_automation(obj, picked[0])
            elif op == "delete":
                result = self.delete(obj, 1)
            elif op == "undelete":
                result = self.undelete(obj, 1)
            else:
                result = self.purge(obj, 1)
        except StoreError as exc:
            # racing admin commands can delete a picked record; that is not a failure
            self._count(f"skipped:{exc.error_code}")
            return None
        self._count(f"{op}:{obj}")
        return result

    def _schedule_automation(self, obj: str, record_id: str) -> None:
        with self._lock:
            if self.rng.random() >= self.mix.automation_share:
                return
            delay = self.rng.uniform(*self.mix.automation_delay)
            recalculation = self.rng.random() < self.mix.recalculation_share
            self._automation_seq += 1
            heapq.heappush(
                self._automation,
                (time.monotonic() + delay, self._automation_seq, obj, record_id, recalculation),
            )

    def _run_due_automation(self) -> None:
        while True:
            with self._lock:
                if not self._automation or self._automation[0][0] > time.monotonic():
                    return
                _, _, obj, record_id, recalculation = heapq.heappop(self._automation)
                values = {} if recalculation else self._automation_values(obj)
            try:
                self.store.commit([Mutation("update", obj, record_id, values)], automation=True)
                self._count(f"{'recalculation' if recalculation else 'automation'}:{obj}")
            except StoreError:
                self._count("skipped:automation")

    def update(self, object: str, count: int) -> CommitResult:
        """One transaction applying the same change to ``count`` live records (merged event)."""
        picked = self.random_ids(object, count)
        with self._lock:
            values = self._update_values(object)
        return self.store.commit([Mutation("update", object, i, values) for i in picked])

    def delete(self, object: str, count: int) -> CommitResult:
        picked = self.random_ids(object, count)
        result = self.store.commit([Mutation("delete", object, i) for i in picked])
        with self._lock:
            recent = self._recently_deleted.setdefault(object, deque(maxlen=10_000))
            recent.extend(result.ids)
        return result

    def undelete(self, object: str, count: int) -> CommitResult:
        picked = self.random_ids(object, count, deleted=True)
        return self.store.commit([Mutation("undelete", object, i) for i in picked])

    def purge(self, object: str, count: int) -> CommitResult:
        """Physical deletes (hard delete / Recycle Bin emptied): no event, gone from queryAll."""
        picked = self.random_ids(object, count, deleted=None)
        return self.store.commit([Mutation("purge", object, i) for i in picked])

    def overflow(self, object: str, changes: int = OVERFLOW_LIMIT + 1) -> CommitResult:
        """One transaction with at least ``changes`` changes (default: just past the limit):
        updates of existing records, topped up with creates when the object is too small."""
        picked = self.random_ids(object, changes)
        marker = f"bulk load {self.rng.randrange(10**9)}"
        field_name = self._bulk_field(object)
        mutations = [Mutation("update", object, i, {field_name: marker}) for i in picked]
        for _ in range(changes - len(mutations)):
            with self._lock:
                values = self._create_values(object)
            mutations.append(Mutation("create", object, values=values))
        return self.store.commit(mutations, origin="com/salesforce/api/bulkapi/59.0")

    def gap(self, object: str, count: int) -> CommitResult:
        """Changes made outside the app server: GAP_UPDATE events without field data."""
        picked = self.random_ids(object, count)
        return self.store.gap(object, picked, {self._bulk_field(object): "archived"})

    def random_ids(self, object: str, count: int, deleted: bool | None = False) -> list[str]:
        """Up to ``count`` distinct existing Ids (live, soft-deleted, or either when None)."""
        spec = self.store.schema.get(object)
        if count <= 0:
            return []
        if deleted:
            recent = self._recently_deleted.get(spec.name)
            found = self._newest_existing(spec.name, list(recent or ()), count, deleted)
            if len(found) >= count:
                return found
            return self._scan(spec.name, count, deleted)
        last = self.store.ids.last(spec.key_prefix)
        if last == 0:
            return []
        found = []
        for _ in range(4):
            # A window of consecutive Ids from a random start, read through the Id index
            # (see _in_range). A set of Ids sampled over the whole range made DuckDB scan
            # the table: ~22 ms a pick at 10M Tasks, which held the traffic to a third of
            # `bench.scale`'s rate. Four Ids a wanted record: most records are live, and an
            # IN list of 8 Ids cost twice one of 4 (~2.3 vs ~1.3 ms).
            span = min(last, 4 * (count - len(found)))
            with self._lock:
                start = self.rng.randint(1, last - span + 1)
            window = self._in_range(spec.name, spec.key_prefix, start, start + span - 1, deleted)
            fresh = [i for i in window if i not in set(found)]
            with self._lock:
                fresh = self.rng.sample(fresh, min(len(fresh), count - len(found)))
            found += fresh
            if len(found) >= count:
                return found
        if len(found) < count:
            extra = [i for i in self._scan(spec.name, count, deleted) if i not in set(found)]
            found += extra[: count - len(found)]
        return found

    def _in_range(
        self, table: str, prefix: str, first: int, last: int, deleted: bool | None
    ) -> list[str]:
        """Existing Ids whose counters are in [first, last], in Id order."""
        cur = self.store.read_cursor()
        try:
            if last - first < SMALL_IN:
                # The window's Ids themselves, filtered on Id alone: DuckDB serves that from
                # the Id index (~1-2 ms at 10M Tasks). A range, or IsDeleted in the same
                # WHERE, is a scan of the Id column's row groups (~10 ms, most of a step).
                wanted = [idmod.make_id(prefix, c) for c in range(first, last + 1)]
                rows = cur.execute(
                    f'SELECT Id, IsDeleted FROM "{table}" WHERE Id IN ({_marks(len(wanted))})',
                    wanted,
                ).fetchall()
            else:
                rows = cur.execute(
                    f'SELECT Id, IsDeleted FROM "{table}" WHERE Id BETWEEN ? AND ?',
                    [idmod.make_id(prefix, first), idmod.make_id(prefix, last)],
                ).fetchall()
        finally:
            cur.close()
        return sorted(r[0] for r in rows if deleted is None or r[1] == deleted)

    def _newest_existing(
        self, table: str, ids: list[str], count: int, deleted: bool | None
    ) -> list[str]:
        """The last ``count`` of ``ids`` that exist in the asked state, in their order."""
        found: list[str] = []
        cur = self.store.read_cursor()
        try:
            # Newest first, in Id-only IN lists (the Id index), until ``count`` are found; a
            # joined Arrow table of the 10K recent Ids made DuckDB scan the table instead:
            # ~100 ms an undelete at 10M Tasks.
            end = len(ids)
            while end > 0 and len(found) < count:
                chunk = ids[max(0, end - SMALL_IN) : end]
                end -= len(chunk)
                rows = cur.execute(
                    f'SELECT Id, IsDeleted FROM "{table}" WHERE Id IN ({_marks(len(chunk))})',
                    chunk,
                ).fetchall()
                present = {r[0] for r in rows if deleted is None or r[1] == deleted}
                found = [i for i in chunk if i in present] + found
        finally:
            cur.close()
        return found[-count:]

    def _scan(self, table: str, count: int, deleted: bool | None) -> list[str]:
        cur = self.store.read_cursor()
        try:
            where = (
                "" if deleted is None else f" WHERE IsDeleted = {'true' if deleted else 'false'}"
            )
            rows = cur.execute(f'SELECT Id FROM "{table}"{where} LIMIT ?', [count]).fetchall()
        finally:
            cur.close()
        return [r[0] for r in rows]

    def _random_user(self) -> str:
        """A live User for a user update's LastModifiedById. The Ids are read again after
        USERS_TTL_S or when a User was created: a query per update was ~6 % of a step at
        10M Tasks, and Salesforce never deletes Users (they are deactivated)."""
        spec = self.store.schema.get("User")
        counter = self.store.ids.last(spec.key_prefix)
        cached = self._users
        if cached is None or cached[1] != counter or time.monotonic() - cached[0] > USERS_TTL_S:
            read_at = time.monotonic()
            cur = self.store.read_cursor()
            try:
                rows = cur.execute(
                    f'SELECT Id FROM "{spec.name}" WHERE NOT IsDeleted ORDER BY Id'
                ).fetchall()
            finally:
                cur.close()
            cached = self._users = (read_at, counter, [r[0] for r in rows])
        if not cached[2]:
            return self.store.integration_user_id
        with self._lock:
            return self.rng.choice(cached[2])

    def _weighted(self, weights: Mapping[str, float]) -> str:
        names = [k for k, v in weights.items() if v > 0]
        return self.rng.choices(names, [weights[k] for k in names])[0]

    def _one(self, object: str) -> str | None:
        picked = self.random_ids(object, 1)
        return picked[0] if picked else None

    def _today(self) -> Any:
        return self.store.clock.now().date()

    def _create_values(self, obj: str) -> dict[str, Any]:
        r = self.rng
        first, last = r.choice(FIRST_NAMES), r.choice(LAST_NAMES)
        company = f"{r.choice(COMPANY_A)} {r.choice(COMPANY_B)}"
        if obj == "Account":
            return {
                "Name": f"{company} {r.randrange(10**4)}",
                "Industry": "Technology",
                "BillingCity": "Austin",
                "AnnualRevenue": r.randrange(10**5, 10**8),
            }
        if obj in ("Contact", "Lead"):
            values: dict[str, Any] = {
                "FirstName": first,
                "LastName": last,
                "Email": f"{first}.{last}.{r.randrange(10**6)}@example.com".lower(),
                "LeadSource": r.choice(LEAD_SOURCES),
            }
            if obj == "Contact":
                values["AccountId"] = self._one("Account")
            else:
                values["Company"] = company
            return values
        if obj == "Opportunity":
            stage = r.choice(list(OPPORTUNITY_STAGES)[:8])
            return {
                "Name": f"{company} - new deal",
                "AccountId": self._one("Account"),
                "StageName": stage,
                "Amount": round(r.lognormvariate(10.2, 1.0), -2),
                "CloseDate": self._today() + timedelta(days=r.randrange(10, 200)),
                "LeadSource": r.choice(LEAD_SOURCES),
            }
        if obj == "OpportunityLineItem":
            opp = self._one("Opportunity")
            if opp is None:
                raise StoreError("no Opportunity to attach a line item to", "NOT_FOUND")
            return {
                "OpportunityId": opp,
                "Product2Id": idmod.make_id("01t", r.randrange(1, 11)),
                "Quantity": r.randrange(1, 20),
                "UnitPrice": r.choice([250, 1200, 4800, 9900]),
            }
        if obj == "Task":
            return {
                "Subject": r.choice(TASK_SUBJECTS),
                "WhatId": self._one("Opportunity"),
                "WhoId": self._one("Contact"),
                "ActivityDate": self._today() + timedelta(days=r.randrange(0, 14)),
                "Priority": r.choice(TASK_PRIORITIES),
            }
        if obj == "Event":
            start = self.store.clock.now().replace(microsecond=0) + timedelta(
                hours=r.randrange(1, 200)
            )
            return {
                "Subject": r.choice(EVENT_SUBJECTS),
                "WhatId": self._one("Account"),
                "StartDateTime": start,
                "DurationInMinutes": r.choice([30, 60]),
            }
        if obj == "User":
            alias = f"u{r.randrange(10**6)}"
            return {
                "LastName": last,
                "FirstName": first,
                "Alias": alias,
                "Username": f"{alias}@example.com",
                "Email": f"{alias}@example.com",
                "TimeZoneSidKey": "Europe/London",
            }
        raise StoreError(f"traffic cannot create {obj}", "INVALID_TYPE")

    def _update_values(self, obj: str) -> dict[str, Any]:
        r = self.rng
        if obj == "Opportunity":
            choice = r.randrange(5)
            if choice == 0:
                return {"StageName": r.choice(list(OPPORTUNITY_STAGES))}
            if choice == 1:
                return {"Amount": round(r.lognormvariate(10.2, 1.0), -2)}
            if choice == 2:
                return {"CloseDate": self._today() + timedelta(days=r.randrange(-10, 120))}
            if choice == 3:
                return {"NextStep": None, "Description": r.choice(["Champion left", None])}
            return {"StageName": "Closed Won", "Amount": round(r.lognormvariate(10.2, 1.0), -2)}
        if obj == "Account":
            return r.choice(
                [
                    {"Phone": f"(555) {r.randrange(10**7):07d}"},
                    {"Rating": r.choice(["Hot", "Warm", "Cold", None])},
                    {"BillingCity": r.choice(["Paris", "Oslo", "Lima"])},
                    {"AnnualRevenue": r.randrange(10**5, 10**8)},
                ]
            )
        if obj in ("Contact", "Lead"):
            return r.choice(
                [
                    {"Email": f"moved.{r.randrange(10**6)}@example.com"},
                    {"LastName": r.choice(LAST_NAMES)},
                    {"Phone": None},
                    {"Title": r.choice(["CEO", "CTO", "Buyer"])},
                ]
            )
        if obj == "OpportunityLineItem":
            return r.choice(
                [{"Quantity": r.randrange(1, 50)}, {"UnitPrice": r.choice([99, 720, 1500])}]
            )
        if obj == "Task":
            return r.choice(
                [
                    {"Status": "Completed"},
                    {"Priority": r.choice(TASK_PRIORITIES)},
                    {"Description": r.choice(["Left voicemail", None])},
                ]
            )
        if obj == "Event":
            return r.choice(
                [
                    {"DurationInMinutes": r.choice([15, 45, 90])},
                    {"Location": r.choice(["Zoom", "HQ", None])},
                ]
            )
        if obj == "User":
            return {"Title": r.choice(["AE", "Senior AE", "Sales Manager"])}
        return {}

    def _automation_values(self, obj: str) -> dict[str, Any]:
        """What a flow/trigger would set after a user edit."""
        r = self.rng
        values: dict[str, dict[str, Any]] = {
            "Opportunity": {"Region__c": r.choice(["AMER", "EMEA", "APAC", "LATAM"])},
            "Account": {"Customer_Tier__c": r.choice(["Tier 1", "Tier 2", "Tier 3"])},
            "Contact": {"Contact_Score__c": float(r.randrange(100))},
            "Lead": {"Lead_Score__c": float(r.randrange(100))},
            "OpportunityLineItem": {"Line_Type__c": r.choice(["New", "Renewal", "Upsell"])},
            "Task": {"Outcome__c": r.choice(["Connected", "No Answer"])},
            "Event": {"Meeting_Outcome__c": r.choice(["Held", "No Show"])},
            "User": {"Sales_Team__c": r.choice(["Enterprise", "SMB"])},
        }
        return values.get(obj, {})

    def _bulk_field(self, obj: str) -> str:
        spec = self.store.schema.get(obj)
        for name in ("Description", "NextStep", "Title", "Subject"):
            if spec.has_field(name) and spec.field(name).updateable:
                return name
        raise StoreError(f"no text field to bulk-update on {obj}", "INVALID_FIELD")


def _marks(n: int) -> str:
    return ", ".join("?" * n)
