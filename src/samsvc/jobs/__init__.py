"""Batch lifecycle: job and image records, the store (Redis or memory behind one interface),
the event log, blobs, Dramatiq actors and broker setup, webhooks. Calls the engine through
samsvc.inference.pipeline; knows nothing of gRPC."""
