"""The API documentation pages: Swagger UI at /docs and ReDoc at /redoc, both from assets
installed with the package (fastapi-offline ships the Swagger UI and ReDoc bundles; only its
static files are used), so the pages work offline. The spec is /openapi.json, made from the
protos at build time.

The pages carry SECURITY_HEADERS like the console's: scripts from this origin only (no inline
script: Swagger UI starts from SWAGGER_INIT, an asset of its own), no framing by other sites,
no content sniffing. Styles may be inline: both bundles set styles at run time."""

from __future__ import annotations

import mimetypes
from importlib import resources
from pathlib import Path

ASSETS_PREFIX = "/docs/assets/"
ASSET_NAMES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
#: Headers of the pages and their assets.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
#: Swagger UI's start, served as an asset (the pages' policy allows no inline script).
SWAGGER_INIT_NAME = "swagger-init.js"
SWAGGER_INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""


def asset_dir() -> Path:
    return Path(str(resources.files("fastapi_offline") / "static"))


def openapi_json() -> bytes:
    return (resources.files("samsvc.v1") / "openapi.json").read_bytes()


def asset(name: str) -> tuple[bytes, str] | None:
    """(content, content type) of a documentation asset, or None for names we do not serve."""
    if name == SWAGGER_INIT_NAME:
        return SWAGGER_INIT.encode(), "text/javascript; charset=utf-8"
    if name not in ASSET_NAMES:
        return None
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return (asset_dir() / name).read_bytes(), kind


SWAGGER_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>samsvc API - Swagger UI</title>
<link rel="icon" href="{ASSETS_PREFIX}favicon.png">
<link rel="stylesheet" href="{ASSETS_PREFIX}swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS_PREFIX}swagger-ui-bundle.js"></script>
<script src="{ASSETS_PREFIX}{SWAGGER_INIT_NAME}"></script>
</body>
</html>
"""

REDOC_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>samsvc API - ReDoc</title>
<link rel="icon" href="{ASSETS_PREFIX}favicon.png">
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="{ASSETS_PREFIX}redoc.standalone.js"></script>
</body>
</html>
"""
