"""Salesforce extraction: auth, REST, Bulk 2.0 backfill, Pub/Sub CDC, API budget.

Importing this package is cheap: simple-salesforce, grpcio and fastavro are imported
inside the functions that use them, so the Dagster code location loads fast.
"""
