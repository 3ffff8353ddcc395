"""CVAT's Segment Anything function, answered by samsvc: deploy it with nuctl in place of CVAT's
own `pth-facebookresearch-sam-vit-h` (same name, so CVAT's SAM plugin uses it) and it forwards
each call to samsvc's `/cvat/sam` route, which returns the image embedding CVAT expects.

The samsvc API key is read from a file, never from the environment (an `--env` value shows in
`nuctl`'s command line, the shell history and `docker inspect`): SAMSVC_API_KEY_FILE, by default
/etc/samsvc/api_key, mounted at deploy time (`nuctl deploy --volume`, or a Kubernetes secret).

Environment: SAMSVC_URL (e.g. http://samsvc:8000), SAMSVC_API_KEY_FILE, SAMSVC_MODEL (optional;
the decoder CVAT's plugin runs must then come from the same model:
GET /api/v1/models/<model>/decoder.onnx), SAMSVC_TIMEOUT_S (default 300).
"""

import json
import os
import urllib.error
import urllib.request

#: Where the key file is mounted unless SAMSVC_API_KEY_FILE says otherwise.
DEFAULT_KEY_FILE = "/etc/samsvc/api_key"


def read_key():
    """The API key from its file; empty (and said so in the log) when there is none."""
    path = os.environ.get("SAMSVC_API_KEY_FILE", DEFAULT_KEY_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def init_context(context):
    base = os.environ.get("SAMSVC_URL", "http://samsvc:8000").rstrip("/")
    model = os.environ.get("SAMSVC_MODEL", "")
    context.user_data.url = f"{base}/cvat/m/{model}/sam" if model else f"{base}/cvat/sam"
    context.user_data.key = read_key()
    if not context.user_data.key:
        context.logger.warn("no samsvc API key: mount one at SAMSVC_API_KEY_FILE (default /etc/samsvc/api_key)")
    context.user_data.timeout = float(os.environ.get("SAMSVC_TIMEOUT_S", "300"))


def handler(context, event):
    body = event.body if isinstance(event.body, (bytes, bytearray)) else json.dumps(event.body).encode()
    headers = {"Content-Type": "application/json"}
    if context.user_data.key:
        headers["Authorization"] = f"Bearer {context.user_data.key}"
    request = urllib.request.Request(context.user_data.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=context.user_data.timeout) as response:
            status, answer = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, answer = error.code, error.read()
    return context.Response(body=answer, headers={}, content_type="application/json", status_code=status)
