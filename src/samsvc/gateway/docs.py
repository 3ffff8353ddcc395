"""The API documentation pages: Swagger UI at /docs and ReDoc at /redoc, both from assets
installed with the package (fastapi-offline ships the Swagger UI and ReDoc bundles; only its
static files are used), so the pages work offline. The spec is /openapi.json, made from the
protos at build time."""

from __future__ import annotations

import mimetypes
from importlib import resources
from pathlib import Path

ASSETS_PREFIX = "/docs/assets/"
ASSET_NAMES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def asset_dir() -> Path:
    return Path(str(resources.files("fastapi_offline") / "static"))


def openapi_json() -> bytes:
    return (resources.files("samsvc.v1") / "openapi.json").read_bytes()


def asset(name: str) -> tuple[bytes, str] | None:
    """(content, content type) of a documentation asset, or None for names we do not serve."""
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
<script>
window.ui = SwaggerUIBundle({{
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
}});
</script>
</body>
</html>
"""

REDOC_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>samsvc API - ReDoc</title>
<link rel="icon" href="{ASSETS_PREFIX}favicon.png">
<style>body {{ margin: 0; padding: 0; }}</style>
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="{ASSETS_PREFIX}redoc.standalone.js"></script>
</body>
</html>
"""
