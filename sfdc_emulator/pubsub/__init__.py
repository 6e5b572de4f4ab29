"""Salesforce Pub/Sub API (eventbus.v1) for the emulator: proto, generated code, gRPC server.

``sfdc_emulator.pubsub.server.PubSubServer`` is the entry point. This package module stays
import-free so ``python -m sfdc_emulator.pubsub.generate`` works even when the generated
modules are missing or stale.
"""
