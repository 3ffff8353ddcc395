"""The web console's static files (samsvc/gateway/console/), served by the gateway's sidecar
at / and /console/NAME: plain HTML, CSS and JavaScript modules written for the browser as
they are (no build step, no CDN, no npm package). The console speaks only the public REST
API, like any client."""

from __future__ import annotations

from importlib import resources

#: Where the console's files are served.
CONSOLE_PREFIX = "/console/"
#: The files, by name, with their content types.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "masks.js": "text/javascript; charset=utf-8",
    "views.js": "text/javascript; charset=utf-8",
}
#: Headers every console file carries: no framing by other sites, scripts only from here.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def console_file(name: str) -> tuple[bytes, str] | None:
    """(content, content type) of a console file, or None for names that are not one."""
    kind = FILES.get(name)
    if kind is None:
        return None
    return (resources.files("samsvc.gateway") / "console" / name).read_bytes(), kind
