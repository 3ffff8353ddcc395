"""CVAT's Segment Anything function, answered by samsvc: deploy it with nuctl in place of CVAT's
own `pth-facebookresearch-sam-vit-h` (same name, so CVAT's SAM plugin uses it) and it forwards
each call to samsvc's `/cvat/sam` route, which returns the image embedding CVAT expects.

Environment: SAMSVC_URL (e.g. http://samsvc:8000), SAMSVC_API_KEY, SAMSVC_MODEL (optional; the
decoder CVAT's plugin runs must then come from the same model:
GET /api/v1/models/<model>/decoder.onnx), SAMSVC_TIMEOUT_S (default 300).
"""

import json
import os
import urllib.error
import urllib.request


def init_context(context):
    base = os.environ.get("SAMSVC_URL", "http://samsvc:8000").rstrip("/")
    model = os.environ.get("SAMSVC_MODEL", "")
    context.user_data.url = f"{base}/cvat/m/{model}/sam" if model else f"{base}/cvat/sam"
    context.user_data.key = os.environ.get("SAMSVC_API_KEY", "")
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
