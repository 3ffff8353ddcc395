"""The models: the registry, downloads, loading, and each family behind one interface
(samsvc.engine.family: SAM in engine/sam/, SAM 2.1 in engine/sam2/), with the mask generation
and prompt decoding they share.

Knows nothing of gRPC, Redis or Dramatiq: takes numpy images and plain options and returns
plain mask records.
"""
