"""Salesforce Pub/Sub API (eventbus.v1): the proto and its generated Python modules.

Shared by the production client (`resources.salesforce.pubsub`) and the emulator's gRPC
server, so a production image can leave the emulator out. This module stays import-free
so `python -m resources.salesforce.pubsub_api.generate` works even when the generated
modules are missing or stale; import `pubsub_api_pb2` / `pubsub_api_pb2_grpc` directly.
"""
