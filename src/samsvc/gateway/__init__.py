"""The gateway in front of the gRPC service: Envoy (its rendered config, routes and process, the
OpenAPI document) and the sidecar behind it (samsvc.gateway.sidecar: an HTTP service Envoy alone
may call) hosting what the transcoder cannot do: multipart uploads, the docs pages and the web
console, and the label-tool adapters (Label Studio's ML backend, CVAT's SAM function). No API
logic lives here: every request ends at the gRPC service."""
