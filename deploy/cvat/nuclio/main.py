"""CVAT's Segment Anything function, answered by samsvc: deploy it with nuctl in place of CVAT's
own `pth-facebookresearch-sam-vit-h` (same name, so CVAT's SAM plugin uses it) and it forwards
each call to samsvc's `/cvat/sam` route, which returns the image embedding CVAT expects.

CVAT's lambda manager posts `{"image": <base64 frame>, "pos_points", "neg_points", "obj_bbox"}`;
only the frame matters here (the plugin decodes the clicks in the browser). A frame larger than
samsvc accepts (its keyed health reports MAX_IMAGE_SIDE and MAX_IMAGE_BYTES) is scaled down
keeping its aspect ratio first: SAM sees every frame at 1024 pixels on its longest side, so the
plugin's click coordinates (scaled by 1024 / the frame's longest side) still land where they
should.

Failures are HTTP statuses CVAT shows the annotator (it shows the status line only; the
function's log has the whole reason): 502 samsvc unreachable, 504 samsvc too slow, samsvc's own
status otherwise (401 a wrong key, 429 overloaded, 400 an unreadable frame).

The samsvc API key is read from a file, never from the environment (an `--env` value shows in
`nuctl`'s command line, the shell history and `docker inspect`): SAMSVC_API_KEY_FILE, by default
/etc/samsvc/api_key, mounted at deploy time (`nuctl deploy --volume`, or a Kubernetes secret).

Environment: SAMSVC_URL (e.g. http://samsvc:8000), SAMSVC_API_KEY_FILE, SAMSVC_MODEL (optional;
the decoder CVAT's plugin runs must then come from the same model:
GET /api/v1/models/<model>/decoder.onnx?graph=DECODER_GRAPH_CVAT), SAMSVC_TIMEOUT_S (default 300).
"""

import base64
import io
import json
import os
import urllib.error
import urllib.request

#: Where the key file is mounted unless SAMSVC_API_KEY_FILE says otherwise.
DEFAULT_KEY_FILE = "/etc/samsvc/api_key"
#: samsvc's defaults, used until its health says otherwise.
DEFAULT_MAX_SIDE = 4096
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
#: JPEG quality of a frame scaled down to fit.
SCALED_QUALITY = 95


def read_key():
    """The API key from its file; empty (and said so in the log) when there is none."""
    path = os.environ.get("SAMSVC_API_KEY_FILE", DEFAULT_KEY_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _request(context, path, body=None):
    """(status, parsed JSON or text) of a call to samsvc; (502 or 504, reason) when it fails."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if context.user_data.key:
        headers["Authorization"] = f"Bearer {context.user_data.key}"
    request = urllib.request.Request(context.user_data.base + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=context.user_data.timeout) as response:
            status, answer = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, answer = error.code, error.read()
    except TimeoutError:
        return 504, f"samsvc at {context.user_data.base} did not answer within {context.user_data.timeout:g} s"
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return 502, f"samsvc at {context.user_data.base} is unreachable ({reason}); check SAMSVC_URL and the network"
    try:
        return status, json.loads(answer)
    except ValueError:
        return status, answer.decode("utf-8", "replace")


def _limits(context):
    """samsvc's image limits (from its keyed health), or its defaults when it does not say."""
    status, health = _request(context, "/api/v1/health")
    limits = health.get("limits", {}) if status == 200 and isinstance(health, dict) else {}
    return int(limits.get("max_image_side") or DEFAULT_MAX_SIDE), int(
        limits.get("max_image_bytes") or DEFAULT_MAX_BYTES
    )


def fit(frame, max_side, max_bytes):
    """The frame's bytes, scaled down (aspect ratio kept) when larger than samsvc accepts."""
    from PIL import Image

    with Image.open(io.BytesIO(frame)) as image:
        width, height = image.size
        if max(width, height) <= max_side and len(frame) <= max_bytes:
            return frame
        scale = min(1.0, max_side / max(width, height))
        while True:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            out = io.BytesIO()
            image.convert("RGB").resize(size, Image.Resampling.BILINEAR).save(out, "JPEG", quality=SCALED_QUALITY)
            if out.tell() <= max_bytes or scale < 0.05:
                return out.getvalue()
            scale *= 0.8


def init_context(context):
    context.user_data.base = os.environ.get("SAMSVC_URL", "http://samsvc:8000").rstrip("/")
    model = os.environ.get("SAMSVC_MODEL", "")
    context.user_data.path = f"/cvat/m/{model}/sam" if model else "/cvat/sam"
    context.user_data.key = read_key()
    context.user_data.timeout = float(os.environ.get("SAMSVC_TIMEOUT_S", "300"))
    context.user_data.limits = None
    if not context.user_data.key:
        context.logger.warn("no samsvc API key: mount one at SAMSVC_API_KEY_FILE (default /etc/samsvc/api_key)")


def _reply(context, status, body):
    if status != 200:
        context.logger.error(f"samsvc answered {status}: {body}")
    text = body if isinstance(body, str) else json.dumps(body)
    return context.Response(body=text, headers={}, content_type="application/json", status_code=status)


def handler(context, event):
    body = event.body if isinstance(event.body, dict) else json.loads(event.body or b"{}")
    image = body.get("image") if isinstance(body, dict) else None
    if not isinstance(image, str) or not image:
        return _reply(context, 400, {"message": "the call carries no frame (image)"})
    if context.user_data.limits is None:
        context.user_data.limits = _limits(context)
    try:
        frame = fit(base64.b64decode(image), *context.user_data.limits)
    except (ValueError, OSError) as error:
        return _reply(context, 400, {"message": f"the frame cannot be read as an image: {error}"})
    status, answer = _request(context, context.user_data.path, {"image": base64.b64encode(frame).decode("ascii")})
    return _reply(context, status, answer)
