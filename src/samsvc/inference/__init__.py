"""The inference layer between the engine and the callers: one image's steps (decode, the
engine's masks, their encodings; `pipeline`) and the interactive ones (embeddings, sessions and
prompts; `interactive`). The server and the job workers both call it; it knows nothing of gRPC,
Redis or Dramatiq."""
