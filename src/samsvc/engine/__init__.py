"""SAM only: the model registry, downloads, loading and mask generation.

Knows nothing of gRPC, Redis or Dramatiq: takes numpy images and plain options and returns
plain mask records.
"""
