"""The sfdc-sync code location: assembles assets, checks, sensors and resources.

It only assembles; what it assembles is defined in the modules beside it. Loading it must
stay cheap (no network, no warehouse connection, no dbt parse): every Dagster run imports it.
"""

import dagster as dg

defs = dg.Definitions()
