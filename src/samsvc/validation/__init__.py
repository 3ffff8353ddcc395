"""The only place input is judged: image bytes and request parameters in, a checked image and
options out, or an InvalidArgument naming the field. Shared by the server and the workers."""
