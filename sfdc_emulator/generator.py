"""Seeded, deterministic org data at a scale, bulk-inserted through ``OrgStore.seed``.

Seed rows are "history from before CDC was enabled": no change events. Everything is
vectorised (numpy + Arrow) so 1M Tasks take seconds. Relationships point at existing
rows (Contacts and Opportunities at Accounts, line items at Opportunities, activities at
Accounts/Opportunities/Contacts/Leads, owners at Users); timestamps spread over the past
~2 years, denser toward now (orgs grow), so SystemModstamp-day partitions are realistic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sfdc_emulator.describe import (
    ACCOUNT_TYPES,
    ACTIVITY_TYPES,
    COMPETITORS,
    INDUSTRIES,
    LEAD_SOURCES,
    LEAD_STATUSES,
    OPPORTUNITY_STAGES,
    OPPORTUNITY_TYPES,
    RATINGS,
    TASK_PRIORITIES,
    TIME_ZONES,
)
from sfdc_emulator.ids import make_ids
from sfdc_emulator.store import OrgStore, arrow_schema

SCALES: dict[str, int] = {"tiny": 60, "small": 20_000, "medium": 400_000}
HISTORY_DAYS = 730
DELETED_FRACTION = 0.015
CHUNK_ROWS = 1_000_000
DAY = 86_400

FIRST_NAMES = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Wei",
    "Aiko",
    "Lars",
    "Ingrid",
    "Mateo",
    "Sofia",
    "Arjun",
    "Priya",
    "Olu",
    "Amara",
    "Hana",
    "Yusuf",
    "Chloe",
    "Noah",
    "Emma",
    "Liam",
    "Mia",
    "Lucas",
    "Zoe",
    "Ethan",
]
LAST_NAMES = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Nguyen",
    "Tanaka",
    "Muller",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Larsen",
    "Okafor",
    "Patel",
    "Kim",
]
COMPANY_A = [
    "Acme",
    "Global",
    "Blue",
    "Northern",
    "Summit",
    "Pioneer",
    "Quantum",
    "Silver",
    "Vertex",
    "Apex",
    "Evergreen",
    "Bright",
    "Crescent",
    "Harbor",
    "Ironwood",
    "Keystone",
    "Lumen",
    "Meridian",
    "Nimbus",
    "Orbit",
    "Pinnacle",
    "Redwood",
    "Sterling",
    "Titan",
    "Unity",
    "Vista",
    "Willow",
    "Zenith",
]
COMPANY_B = [
    "Systems",
    "Dynamics",
    "Labs",
    "Logistics",
    "Health",
    "Energy",
    "Foods",
    "Media",
    "Analytics",
    "Networks",
    "Robotics",
    "Capital",
    "Partners",
    "Solutions",
    "Industries",
    "Software",
    "Retail",
    "Bio",
    "Motors",
    "Works",
]
COMPANY_SUFFIX = ("Inc.", "LLC", "Ltd", "GmbH", "Corp.", "SA", "Group", "Co.")
CITIES = (
    ("San Francisco", "CA", "US", "94105", 37.79, -122.39),
    ("New York", "NY", "US", "10001", 40.75, -73.99),
    ("Austin", "TX", "US", "78701", 30.27, -97.74),
    ("Chicago", "IL", "US", "60601", 41.88, -87.62),
    ("Seattle", "WA", "US", "98101", 47.61, -122.33),
    ("Boston", "MA", "US", "02108", 42.36, -71.06),
    ("London", None, "GB", "EC1A 1BB", 51.52, -0.10),
    ("Paris", None, "FR", "75001", 48.86, 2.34),
    ("Berlin", None, "DE", "10115", 52.53, 13.38),
    ("Tokyo", None, "JP", "100-0001", 35.68, 139.76),
    ("Sydney", "NSW", "AU", "2000", -33.87, 151.21),
    ("Toronto", "ON", "CA", "M5H", 43.65, -79.38),
)
STREETS = ("Main St", "Market St", "Oak Ave", "Pine St", "High St", "Elm Rd", "Park Blvd")
TITLES = (
    "CEO",
    "CFO",
    "VP Sales",
    "VP Engineering",
    "Director of Operations",
    "IT Manager",
    "Procurement Lead",
    "Head of Data",
    "Account Executive",
    "Analyst",
)
DEPARTMENTS = ("Sales", "Finance", "Engineering", "Operations", "IT", "Marketing", "Legal")
TASK_SUBJECTS = (
    "Call",
    "Send Letter",
    "Send Quote",
    "Email",
    "Follow up",
    "Demo",
    "Check in",
    "Prepare proposal",
    "Contract review",
    "Renewal reminder",
)
EVENT_SUBJECTS = ("Meeting", "Discovery call", "Demo", "QBR", "Lunch", "Onsite workshop")
PRODUCTS = tuple(
    (f"SKU-{i:04d}", price)
    for i, price in enumerate((1200, 2400, 4800, 9900, 250, 500, 15000, 36000, 720, 99), 1)
)
# Stage mix of an established org: most history is closed.
STAGE_WEIGHTS = {
    "Prospecting": 0.08,
    "Qualification": 0.07,
    "Needs Analysis": 0.06,
    "Value Proposition": 0.05,
    "Id. Decision Makers": 0.04,
    "Perception Analysis": 0.03,
    "Proposal/Price Quote": 0.05,
    "Negotiation/Review": 0.04,
    "Closed Won": 0.26,
    "Closed Lost": 0.32,
}


@dataclass(frozen=True)
class Plan:
    """Row counts per object for one scale."""

    counts: dict[str, int]


def plan(scale: str | int, overrides: Mapping[str, int] | None = None) -> Plan:
    """Row counts: named scales, or an int N = number of Tasks (others proportional, with
    the Opportunity:activity ratio of the design target, ~1:60 at 8M:500M, relaxed to 1:20
    so small runs still have a meaningful Opportunity table). ``overrides`` replaces single
    objects (`serve --count Opportunity=1000000`), e.g. a production-shaped ratio."""
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}: tiny, small, medium or an int")
        tasks = SCALES[scale]
    else:
        tasks = int(scale)
    if tasks < 1:
        raise ValueError("scale must be at least 1 Task")
    if scale == "tiny":
        counts = {
            "User": 5,
            "Account": 20,
            "Contact": 40,
            "Lead": 20,
            "Opportunity": 30,
            "OpportunityLineItem": 60,
            "Task": 60,
            "Event": 30,
        }
    else:
        opportunities = max(10, tasks // 20)
        accounts = max(5, opportunities // 4)
        counts = {
            "User": int(min(2000, max(5, tasks // 2000))),
            "Account": accounts,
            "Contact": accounts * 3,
            "Lead": accounts * 2,
            "Opportunity": opportunities,
            "OpportunityLineItem": opportunities * 2,
            "Task": tasks,
            "Event": max(5, tasks // 4),
        }
    for name, n in (overrides or {}).items():
        if name not in counts:
            raise ValueError(f"unknown object {name!r} in counts: one of {sorted(counts)}")
        if n < 1:
            raise ValueError(f"count of {name} must be at least 1, not {n}")
        counts[name] = int(n)
    return Plan(counts)


class _Gen:
    def __init__(self, store: OrgStore, seed: int, anchor_s: int) -> None:
        self.store = store
        self.seed = seed
        self.anchor = anchor_s
        self.ids: dict[str, pa.Array] = {}
        self.extra: dict[str, dict[str, np.ndarray]] = {}

    def rng(self, obj: str, chunk: int = 0) -> np.random.Generator:
        key = sum(ord(c) * 31**i for i, c in enumerate(obj)) % (2**31)
        return np.random.default_rng([self.seed, key, chunk])

    @staticmethod
    def pick(rng: np.random.Generator, choices: tuple | list, n: int, p=None) -> pa.Array:
        idx = rng.choice(len(choices), size=n, p=p)
        return pc.take(pa.array(list(choices)), pa.array(idx))

    @staticmethod
    def null_some(rng: np.random.Generator, arr: pa.Array, fraction: float) -> pa.Array:
        mask = pa.array(rng.random(len(arr)) < fraction)
        return pc.if_else(mask, pa.nulls(len(arr), arr.type), arr)

    @staticmethod
    def ref(rng: np.random.Generator, target: pa.Array, n: int) -> pa.Array:
        return pc.take(target, pa.array(rng.integers(0, len(target), size=n)))

    @staticmethod
    def ts(seconds: np.ndarray) -> pa.Array:
        return pa.array(seconds.astype("datetime64[s]")).cast(pa.timestamp("us"))

    def system(self, rng: np.random.Generator, n: int, users: pa.Array) -> dict[str, pa.Array]:
        """Id-less system columns: growth-skewed CreatedDate, some modified later, a few
        touched by automation (SystemModstamp > LastModifiedDate), some soft-deleted."""
        age = (HISTORY_DAYS * DAY * (1 - np.sqrt(rng.random(n)))).astype(np.int64) + 60
        created = self.anchor - age
        modified = created + (age * rng.random(n) * (rng.random(n) < 0.6)).astype(np.int64)
        stamp = modified + (
            (self.anchor - modified) * rng.random(n) * 0.1 * (rng.random(n) < 0.1)
        ).astype(np.int64)
        deleted = rng.random(n) < DELETED_FRACTION
        # the Recycle Bin keeps deletes ~15 days, so soft-deleted rows are recent deletes
        delete_at = self.anchor - rng.integers(60, 30 * DAY, size=n)
        delete_at = np.maximum(delete_at, stamp)
        modified = np.where(deleted, delete_at, modified)
        stamp = np.where(deleted, delete_at, stamp)
        creator = self.ref(rng, users, n)
        return {
            "IsDeleted": pa.array(deleted),
            "CreatedDate": self.ts(created),
            "CreatedById": creator,
            "LastModifiedDate": self.ts(modified),
            "LastModifiedById": pc.if_else(
                pa.array(rng.random(n) < 0.7), creator, self.ref(rng, users, n)
            ),
            "SystemModstamp": self.ts(stamp),
            "_created_s": created,
        }

    def write(self, obj: str, ids: pa.Array, cols: dict[str, pa.Array]) -> None:
        spec = self.store.schema.get(obj)
        schema = arrow_schema(spec)
        n = len(ids)
        data = {"Id": ids}
        data.update({k: v for k, v in cols.items() if not k.startswith("_")})
        arrays = []
        for f in schema:
            value = data.get(f.name)
            if value is None:
                arrays.append(pa.nulls(n, f.type))
            else:
                # floats were rounded to the field's scale already; unsafe cast skips the
                # float->decimal exactness check that 0.1-style binary fractions fail
                arrays.append(value if value.type == f.type else value.cast(f.type, safe=False))
        self.store.seed(obj, pa.Table.from_arrays(arrays, schema=schema))

    def address(self, rng: np.random.Generator, prefix: str, n: int) -> dict[str, pa.Array]:
        city = rng.integers(0, len(CITIES), size=n)
        number = pc.cast(pa.array(rng.integers(1, 999, size=n)), pa.string())
        street = pc.binary_join_element_wise(number, self.pick(rng, STREETS, n), " ")

        def part(i: int) -> pa.Array:
            return pc.take(pa.array([c[i] for c in CITIES]), pa.array(city))

        return {
            f"{prefix}Street": street,
            f"{prefix}City": part(0),
            f"{prefix}State": part(1),
            f"{prefix}Country": part(2),
            f"{prefix}PostalCode": part(3),
            f"{prefix}Latitude": part(4),
            f"{prefix}Longitude": part(5),
        }

    def person(self, rng: np.random.Generator, n: int, salutation: bool = True) -> dict:
        first = self.pick(rng, FIRST_NAMES, n)
        last = self.pick(rng, LAST_NAMES, n)
        out = {
            "FirstName": first,
            "LastName": last,
            "Name": pc.binary_join_element_wise(first, last, " "),
        }
        if salutation:
            out["Salutation"] = self.null_some(
                rng, self.pick(rng, ("Mr.", "Ms.", "Mrs.", "Dr."), n), 0.4
            )
        return out

    @staticmethod
    def email(first: pa.Array, last: pa.Array, serial: pa.Array, domain: pa.Array) -> pa.Array:
        local = pc.utf8_lower(pc.binary_join_element_wise(first, last, serial, "."))
        return pc.binary_join_element_wise(local, domain, "@")

    @staticmethod
    def phone(rng: np.random.Generator, n: int) -> pa.Array:
        digits = pc.cast(pa.array(rng.integers(2_000_000, 9_999_999, size=n)), pa.string())
        area = pc.cast(pa.array(rng.integers(200, 999, size=n)), pa.string())
        return pc.binary_join_element_wise(
            pc.binary_join_element_wise(pa.array(["("] * n), area, ""), digits, ") "
        )

    def users(self, n: int) -> None:
        rng = self.rng("User")
        ids = self.store.reserve_ids("User", n)
        admin = pa.array([self.store.integration_user_id] * n)
        cols = self.system(rng, n, admin)
        cols["IsDeleted"] = pa.array([False] * n)  # Users cannot be deleted
        person = self.person(rng, n, salutation=False)
        serial = pc.cast(pa.array(np.arange(n)), pa.string())
        email = self.email(
            person["FirstName"], person["LastName"], serial, pa.array(["ex.com"] * n)
        )
        alias = pc.utf8_slice_codeunits(
            pc.binary_join_element_wise(pc.utf8_lower(person["LastName"]), serial, ""), 0, 8
        )
        cols.update(person)
        cols.update(
            Username=email,
            Email=email,
            Alias=alias,
            CommunityNickname=alias,
            IsActive=pa.array(rng.random(n) < 0.9),
            TimeZoneSidKey=self.pick(rng, TIME_ZONES, n),
            LocaleSidKey=pa.array(["en_US"] * n),
            EmailEncodingKey=pa.array(["UTF-8"] * n),
            LanguageLocaleKey=pa.array(["en_US"] * n),
            UserType=pa.array(["Standard"] * n),
            Title=self.pick(rng, ("Account Executive", "SDR", "Sales Manager", "CSM"), n),
            Department=pa.array(["Sales"] * n),
            CompanyName=pa.array(["sfdc-sync demo org"] * n),
            Phone=self.phone(rng, n),
            Sales_Team__c=self.pick(rng, ("Enterprise", "Mid-Market", "SMB", "Partner"), n),
            **self.address(rng, "", n),
        )
        cols["ManagerId"] = self.null_some(rng, self.ref(rng, ids, n), 0.3)
        self.write("User", ids, cols)
        self.ids["User"] = pa.concat_arrays([ids, pa.array([self.store.integration_user_id])])

    def accounts(self, n: int) -> None:
        rng = self.rng("Account")
        ids = self.store.reserve_ids("Account", n)
        users = self.ids["User"]
        cols = self.system(rng, n, users)
        serial = pc.cast(pa.array(np.arange(1, n + 1)), pa.string())
        name = pc.binary_join_element_wise(
            self.pick(rng, COMPANY_A, n),
            self.pick(rng, COMPANY_B, n),
            self.pick(rng, COMPANY_SUFFIX, n),
            " ",
        )
        # serial keeps names unique enough to be useful in tests
        name = pc.binary_join_element_wise(name, serial, " #")
        domain = pc.binary_join_element_wise(
            pc.binary_join_element_wise(pc.utf8_lower(self.pick(rng, COMPANY_A, n)), serial, ""),
            pa.array(["example.com"] * n),
            ".",
        )
        revenue = np.round(np.exp(rng.normal(16, 1.6, size=n)), -3)
        employees = np.maximum(1, np.exp(rng.normal(5, 1.8, size=n)).astype(np.int64))
        parent = pc.if_else(
            pa.array((rng.random(n) < 0.1) & (np.arange(n) > 0)),
            pc.take(ids, pa.array((rng.random(n) * np.arange(n)).astype(np.int64))),
            pa.nulls(n, pa.string()),
        )
        cols.update(
            Name=name,
            Type=self.pick(rng, ACCOUNT_TYPES, n),
            ParentId=parent,
            **self.address(rng, "Billing", n),
            **{k: v for k, v in self.address(rng, "Shipping", n).items()},
            Phone=self.phone(rng, n),
            AccountNumber=pc.binary_join_element_wise(pa.array(["AC"] * n), serial, "-"),
            Website=pc.binary_join_element_wise(pa.array(["https://www"] * n), domain, "."),
            Industry=self.pick(rng, INDUSTRIES, n),
            AnnualRevenue=self.null_some(rng, pa.array(revenue), 0.2),
            NumberOfEmployees=self.null_some(rng, pa.array(employees), 0.15),
            Ownership=self.pick(rng, ("Public", "Private", "Subsidiary", "Other"), n),
            Rating=self.null_some(rng, self.pick(rng, RATINGS, n), 0.3),
            OwnerId=self.ref(rng, users, n),
            AccountSource=self.pick(rng, LEAD_SOURCES, n),
            Customer_Tier__c=self.pick(rng, ("Tier 1", "Tier 2", "Tier 3"), n),
            SLA__c=self.null_some(
                rng, self.pick(rng, ("Gold", "Silver", "Platinum", "Bronze"), n), 0.3
            ),
            External_Account_Id__c=pc.binary_join_element_wise(pa.array(["EXT"] * n), serial, "-"),
            Active__c=self.pick(rng, ("Yes", "No"), n, p=[0.85, 0.15]),
        )
        self.write("Account", ids, cols)
        self.ids["Account"] = ids
        self.extra["Account"] = {"domain": domain}

    def contacts(self, n: int) -> None:
        rng = self.rng("Contact")
        ids = self.store.reserve_ids("Contact", n)
        users = self.ids["User"]
        cols = self.system(rng, n, users)
        person = self.person(rng, n)
        serial = pc.cast(pa.array(np.arange(n)), pa.string())
        account_idx = pa.array(rng.integers(0, len(self.ids["Account"]), size=n))
        domain = pc.take(self.extra["Account"]["domain"], account_idx)
        cols.update(person)
        cols.update(
            AccountId=self.null_some(rng, pc.take(self.ids["Account"], account_idx), 0.05),
            **self.address(rng, "Mailing", n),
            Phone=self.phone(rng, n),
            MobilePhone=self.null_some(rng, self.phone(rng, n), 0.5),
            Email=self.null_some(
                rng, self.email(person["FirstName"], person["LastName"], serial, domain), 0.05
            ),
            Title=self.pick(rng, TITLES, n),
            Department=self.pick(rng, DEPARTMENTS, n),
            LeadSource=self.pick(rng, LEAD_SOURCES, n),
            HasOptedOutOfEmail=pa.array(rng.random(n) < 0.08),
            DoNotCall=pa.array(rng.random(n) < 0.05),
            OwnerId=self.ref(rng, users, n),
            Preferred_Language__c=self.pick(
                rng, ("English", "French", "German", "Spanish", "Japanese"), n
            ),
            Contact_Score__c=pa.array(rng.integers(0, 100, size=n).astype(float)),
        )
        self.write("Contact", ids, cols)
        self.ids["Contact"] = ids

    def leads(self, n: int) -> None:
        rng = self.rng("Lead")
        ids = self.store.reserve_ids("Lead", n)
        users = self.ids["User"]
        cols = self.system(rng, n, users)
        person = self.person(rng, n)
        serial = pc.cast(pa.array(np.arange(n)), pa.string())
        company = pc.binary_join_element_wise(
            self.pick(rng, COMPANY_A, n), self.pick(rng, COMPANY_B, n), " "
        )
        status = self.pick(rng, LEAD_STATUSES, n, p=[0.3, 0.3, 0.15, 0.25])
        converted = pc.equal(status, "Closed - Converted")
        cols.update(person)
        cols.update(
            Company=company,
            Title=self.pick(rng, TITLES, n),
            **self.address(rng, "", n),
            Phone=self.phone(rng, n),
            Email=self.email(
                person["FirstName"], person["LastName"], serial, pa.array(["lead.example.org"] * n)
            ),
            LeadSource=self.pick(rng, LEAD_SOURCES, n),
            Status=status,
            Industry=self.pick(rng, INDUSTRIES, n),
            Rating=self.pick(rng, RATINGS, n),
            IsConverted=converted,
            ConvertedDate=pc.if_else(
                converted,
                pc.cast(cols["LastModifiedDate"], pa.date32()),
                pa.nulls(n, pa.date32()),
            ),
            IsUnreadByOwner=pa.array(rng.random(n) < 0.2),
            OwnerId=self.ref(rng, users, n),
            Lead_Score__c=pa.array(rng.integers(0, 100, size=n).astype(float)),
        )
        self.write("Lead", ids, cols)
        self.ids["Lead"] = ids

    def opportunities(self, n: int) -> None:
        rng = self.rng("Opportunity")
        ids = self.store.reserve_ids("Opportunity", n)
        users = self.ids["User"]
        cols = self.system(rng, n, users)
        stages = list(STAGE_WEIGHTS)
        stage_idx = rng.choice(len(stages), size=n, p=list(STAGE_WEIGHTS.values()))
        info = [OPPORTUNITY_STAGES[s] for s in stages]
        probability = np.array([i[0] for i in info], dtype=float)[stage_idx]
        closed = np.array([i[2] for i in info])[stage_idx]
        won = np.array([i[3] for i in info])[stage_idx]
        forecast = pc.take(pa.array([i[1] for i in info]), pa.array(stage_idx))
        amount = np.round(np.exp(rng.normal(10.2, 1.0, size=n)), -2)
        has_amount = rng.random(n) >= 0.03
        expected = np.round(amount * probability / 100, 2)
        created = cols["_created_s"]
        close_s = np.where(
            closed,
            np.minimum(created + rng.integers(7, 180, size=n) * DAY, self.anchor),
            self.anchor + rng.integers(-30, 270, size=n) * DAY,
        )
        close_date = close_s.astype("datetime64[s]").astype("datetime64[D]")
        years = close_date.astype("datetime64[Y]").astype(int) + 1970
        months = close_date.astype("datetime64[M]").astype(int) % 12 + 1
        account_idx = rng.integers(0, len(self.ids["Account"]), size=n)
        serial = pc.cast(pa.array(np.arange(1, n + 1)), pa.string())
        name = pc.binary_join_element_wise(
            pc.take(
                pa.array([t.split(" - ")[-1] for t in OPPORTUNITY_TYPES]),
                pa.array(rng.integers(0, 4, size=n)),
            ),
            serial,
            " deal #",
        )
        amount_arr = pa.array(np.where(has_amount, amount, np.nan), from_pandas=True)
        cols.update(
            AccountId=pc.take(self.ids["Account"], pa.array(account_idx)),
            IsPrivate=pa.array(rng.random(n) < 0.02),
            Name=name,
            StageName=pc.take(pa.array(stages), pa.array(stage_idx)),
            Amount=amount_arr,
            Probability=pa.array(probability),
            ExpectedRevenue=pa.array(np.where(has_amount, expected, np.nan), from_pandas=True),
            CloseDate=pa.array(close_date),
            Type=self.pick(rng, OPPORTUNITY_TYPES, n),
            NextStep=self.null_some(
                rng, self.pick(rng, ("Send proposal", "Schedule demo", "Legal review"), n), 0.5
            ),
            LeadSource=self.pick(rng, LEAD_SOURCES, n),
            IsClosed=pa.array(closed),
            IsWon=pa.array(won),
            ForecastCategoryName=forecast,
            OwnerId=self.ref(rng, users, n),
            FiscalYear=pa.array(years.astype(np.int64)),
            FiscalQuarter=pa.array(((months - 1) // 3 + 1).astype(np.int64)),
            Discount_Percent__c=self.null_some(rng, pa.array(np.round(rng.random(n) * 30, 2)), 0.6),
            Competitor__c=self.null_some(rng, self.pick(rng, COMPETITORS, n), 0.4),
            Contract_Term_Months__c=pa.array(rng.choice([12.0, 24.0, 36.0], size=n)),
            Region__c=self.pick(
                rng, ("AMER", "EMEA", "APAC", "LATAM"), n, p=[0.5, 0.3, 0.15, 0.05]
            ),
        )
        self.write("Opportunity", ids, cols)
        self.ids["Opportunity"] = ids
        self.extra["Opportunity"] = {"close": close_date, "created": created}

    def line_items(self, n: int) -> None:
        rng = self.rng("OpportunityLineItem")
        ids = self.store.reserve_ids("OpportunityLineItem", n)
        users = self.ids["User"]
        cols = self.system(rng, n, users)
        opp_idx = rng.integers(0, len(self.ids["Opportunity"]), size=n)
        product_idx = rng.integers(0, len(PRODUCTS), size=n)
        list_price = np.array([p[1] for p in PRODUCTS], dtype=float)[product_idx]
        discount = np.where(rng.random(n) < 0.3, np.round(rng.random(n) * 20, 2), 0.0)
        unit = np.round(list_price * (1 - discount / 100), 2)
        quantity = rng.integers(1, 50, size=n).astype(float)
        product_ids = make_ids("01t", 1, len(PRODUCTS))
        pricebook_ids = make_ids("01u", 1, len(PRODUCTS))
        # a line item is created with (or after) its opportunity
        opp_created = self.extra["Opportunity"]["created"][opp_idx]
        created = np.maximum(cols["_created_s"], opp_created)
        cols["CreatedDate"] = self.ts(created)
        cols["LastModifiedDate"] = self.ts(
            np.maximum(created, cols["LastModifiedDate"].cast(pa.int64()).to_numpy() // 10**6)
        )
        cols["SystemModstamp"] = self.ts(
            np.maximum(
                cols["LastModifiedDate"].cast(pa.int64()).to_numpy() // 10**6,
                cols["SystemModstamp"].cast(pa.int64()).to_numpy() // 10**6,
            )
        )
        cols.update(
            OpportunityId=pc.take(self.ids["Opportunity"], pa.array(opp_idx)),
            SortOrder=pa.array(rng.integers(1, 10, size=n)),
            PricebookEntryId=pc.take(pricebook_ids, pa.array(product_idx)),
            Product2Id=pc.take(product_ids, pa.array(product_idx)),
            ProductCode=pc.take(pa.array([p[0] for p in PRODUCTS]), pa.array(product_idx)),
            Quantity=pa.array(quantity),
            UnitPrice=pa.array(unit),
            ListPrice=pa.array(list_price),
            TotalPrice=pa.array(np.round(unit * quantity, 2)),
            ServiceDate=pa.array(self.extra["Opportunity"]["close"][opp_idx]),
            Line_Type__c=self.pick(rng, ("New", "Renewal", "Upsell"), n, p=[0.6, 0.3, 0.1]),
        )
        self.write("OpportunityLineItem", ids, cols)

    def _what_who(self, rng: np.random.Generator, n: int) -> tuple[pa.Array, pa.Array]:
        r = rng.random(n)
        what = pc.if_else(
            pa.array(r < 0.6),
            self.ref(rng, self.ids["Opportunity"], n),
            pc.if_else(
                pa.array(r < 0.9), self.ref(rng, self.ids["Account"], n), pa.nulls(n, pa.string())
            ),
        )
        r = rng.random(n)
        who = pc.if_else(
            pa.array(r < 0.5),
            self.ref(rng, self.ids["Contact"], n),
            pc.if_else(
                pa.array(r < 0.7), self.ref(rng, self.ids["Lead"], n), pa.nulls(n, pa.string())
            ),
        )
        return what, who

    def tasks(self, n: int, chunk: int) -> None:
        rng = self.rng("Task", chunk)
        ids = self.store.reserve_ids("Task", n)
        users = self.ids["User"]
        cols = self.system(rng, n, users)
        what, who = self._what_who(rng, n)
        created = cols["_created_s"]
        due = (created + rng.integers(-5 * DAY, 14 * DAY, size=n)).astype("datetime64[s]")
        completed = rng.random(n) < 0.7
        priority = self.pick(rng, TASK_PRIORITIES, n, p=[0.2, 0.7, 0.1])
        subtype = self.pick(rng, ("Task", "Email", "Call"), n, p=[0.5, 0.3, 0.2])
        is_call = pc.equal(subtype, "Call")
        cols.update(
            WhoId=who,
            WhatId=what,
            Subject=self.pick(rng, TASK_SUBJECTS, n),
            ActivityDate=pa.array(due.astype("datetime64[D]")),
            Status=pc.if_else(
                pa.array(completed),
                pa.array(["Completed"] * n),
                self.pick(rng, ("Not Started", "In Progress", "Waiting on someone else"), n),
            ),
            Priority=priority,
            IsHighPriority=pc.equal(priority, "High"),
            OwnerId=self.ref(rng, users, n),
            Description=self.null_some(
                rng, self.pick(rng, ("Left voicemail", "Discussed pricing", "Sent deck"), n), 0.8
            ),
            Type=self.pick(rng, ACTIVITY_TYPES, n),
            IsClosed=pa.array(completed),
            CallDurationInSeconds=pc.if_else(
                is_call, pa.array(rng.integers(30, 3600, size=n)), pa.nulls(n, pa.int64())
            ),
            CallType=pc.if_else(
                is_call,
                self.pick(rng, ("Internal", "Inbound", "Outbound"), n),
                pa.nulls(n, pa.string()),
            ),
            TaskSubtype=subtype,
            CompletedDateTime=pc.if_else(
                pa.array(completed), cols["LastModifiedDate"], pa.nulls(n, pa.timestamp("us"))
            ),
            IsReminderSet=pa.array(np.zeros(n, dtype=bool)),
            Outcome__c=self.null_some(
                rng,
                self.pick(rng, ("Connected", "Left Voicemail", "No Answer", "Meeting Booked"), n),
                0.5,
            ),
        )
        self.write("Task", ids, cols)

    def events(self, n: int, chunk: int) -> None:
        rng = self.rng("Event", chunk)
        ids = self.store.reserve_ids("Event", n)
        users = self.ids["User"]
        cols = self.system(rng, n, users)
        what, who = self._what_who(rng, n)
        start = cols["_created_s"] + rng.integers(1, 30, size=n) * DAY
        start = start - start % 1800  # meetings start on the half hour
        duration = rng.choice([30, 60, 90, 120], size=n, p=[0.4, 0.4, 0.1, 0.1])
        start_ts = self.ts(start)
        cols.update(
            WhoId=who,
            WhatId=what,
            Subject=self.pick(rng, EVENT_SUBJECTS, n),
            Location=self.null_some(rng, self.pick(rng, ("Zoom", "Teams", "Onsite", "HQ"), n), 0.3),
            IsAllDayEvent=pa.array(np.zeros(n, dtype=bool)),
            ActivityDateTime=start_ts,
            ActivityDate=pa.array(start.astype("datetime64[s]").astype("datetime64[D]")),
            DurationInMinutes=pa.array(duration.astype(np.int64)),
            StartDateTime=start_ts,
            EndDateTime=self.ts(start + duration * 60),
            OwnerId=self.ref(rng, users, n),
            Type=pa.array(["Meeting"] * n),
            IsPrivate=pa.array(rng.random(n) < 0.03),
            ShowAs=pa.array(["Busy"] * n),
            EventSubtype=pa.array(["Event"] * n),
            Meeting_Outcome__c=self.null_some(
                rng, self.pick(rng, ("Held", "No Show", "Rescheduled", "Cancelled"), n), 0.4
            ),
        )
        self.write("Event", ids, cols)


def generate(
    store: OrgStore,
    scale: str | int,
    seed: int,
    *,
    anchor: datetime | None = None,
    chunk_rows: int = CHUNK_ROWS,
    counts: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Seed the org with data at ``scale``; returns rows inserted per object.

    Deterministic for (fresh store, scale, seed, anchor). ``anchor`` (default: emulator now)
    is "now" for the generated history; ``counts`` overrides single objects (`plan`).
    """
    planned = plan(scale, counts).counts
    anchor = anchor or store.clock.now()
    if anchor.tzinfo is None:
        anchor = anchor.replace(tzinfo=UTC)
    gen = _Gen(store, seed, int(anchor.timestamp()) - 1)
    steps: list[tuple[str, Callable[[int], None]]] = [
        ("User", gen.users),
        ("Account", gen.accounts),
        ("Contact", gen.contacts),
        ("Lead", gen.leads),
        ("Opportunity", gen.opportunities),
        ("OpportunityLineItem", gen.line_items),
    ]
    for obj, step in steps:
        step(planned[obj])
    for obj, chunked in (("Task", gen.tasks), ("Event", gen.events)):
        total = planned[obj]
        for chunk, start in enumerate(range(0, total, chunk_rows)):
            chunked(min(chunk_rows, total - start), chunk)
    return planned
