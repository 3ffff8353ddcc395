"""Shared infrastructure every room may use: Redis connections and byte budgets, object storage
(S3), outbound HTTP with its address checks, logging and metrics. Nothing here knows the domain."""
