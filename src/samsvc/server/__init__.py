"""The gRPC face: servicers, the error boundary, conversion between protobuf messages and
domain records, admission control, health, reflection and graceful shutdown."""
