"""The SAM family (segment-anything): building and loading its models, automatic mask generation
(the reference generator and samsvc's faster one, the same masks), the image encoder, prompts,
and the ONNX decoders it serves (segment-anything's export and CVAT's graph).

Only this package imports segment-anything."""
