"""Salesforce Pub/Sub API (eventbus.v1) for the emulator: the gRPC server.

``sfdc_emulator.pubsub.server.PubSubServer`` is the entry point. The proto and its generated
modules live in ``resources.salesforce.pubsub_api``, shared with the production client.
"""
