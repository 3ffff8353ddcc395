"""What Envoy needs: the rendered config, the Envoy process, the OpenAPI document and docs
pages, and the small multipart adapter. No API logic lives here: every request ends at the
gRPC service."""
