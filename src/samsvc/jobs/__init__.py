"""Batch lifecycle: job and image records, the store (Redis or memory behind one interface), the
event log, blobs, Dramatiq actors and broker setup, webhooks. Calls the engine through
samsvc.inference.pipeline; knows nothing of gRPC.

The server enters through `service.JobService` only. Sub-rooms: `stores/` and `blob_stores/`
(backends behind `store.py` and `blobs.py`), `worker/` (Dramatiq and the worker process),
`recovery/` (leases and the reconciler); `runtime.py` wires them once per process."""
