"""The console's login session, CSRF checks and security headers.

The session cookie holds a SIGNED value (operator name, random nonce, expiry), never the
token: its key is derived from the API token (HMAC), so every replica sharing the token
accepts it, and changing the token logs everyone out. Without a token (loopback only)
the key is random per process. The cookie is HttpOnly, SameSite=Strict, Path=/console,
and Secure when the request came over TLS. A logout clears the browser's cookie; a
copied cookie stays valid until it expires (stateless: there is no server-side list).

Every POST (actions, login, logout) must come from this origin: a `Sec-Fetch-Site` other
than same-origin/none, or an `Origin` that is not this host, is refused; actions also
carry the session's CSRF token (an HMAC of its nonce) in a form field.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

COOKIE = "chatlane_console"
PATH = "/console"
SESSION_S = 12 * 3600
OPERATOR_RE = re.compile(r"[A-Za-z0-9._@ -]{1,64}")
DEFAULT_OPERATOR = "operator"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # not no-referrer: with it Chrome sends `Origin: null` on form posts, failing `same_origin`
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class Session:
    operator: str
    nonce: str
    expires: float


class Sessions:
    """Issues and checks signed console sessions."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        secret = token.encode() if token else secrets.token_bytes(32)
        self._key = hmac.new(secret, b"chatlane-console-session-v1", hashlib.sha256).digest()

    def token_ok(self, given: str) -> bool:
        """The login form's token (any, when no token is configured: loopback only)."""
        if self.token is None:
            return True
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.token.encode())

    def issue(self, operator: str, now: float | None = None) -> tuple[Session, str]:
        s = Session(operator, secrets.token_urlsafe(18), (now or time.time()) + SESSION_S)
        body = base64.urlsafe_b64encode(
            json.dumps({"op": s.operator, "n": s.nonce, "exp": s.expires}).encode()
        ).decode()
        return s, f"{body}.{self._sign(body.encode())}"

    def check(self, cookie: str | None, now: float | None = None) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        body, _, sig = cookie.rpartition(".")
        if not hmac.compare_digest(sig, self._sign(body.encode())):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body.encode()))
            s = Session(str(data["op"]), str(data["n"]), float(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return s if s.expires > (now or time.time()) else None

    def csrf(self, session: Session) -> str:
        return self._sign(b"csrf:" + session.nonce.encode())

    def csrf_ok(self, session: Session, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.csrf(session).encode())

    def _sign(self, data: bytes) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()


def same_origin(request: web.Request) -> bool:
    """False for a request a browser marks as cross-site, or whose Origin is another host."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


def operator_name(raw: str) -> str:
    name = raw.strip()
    return name if OPERATOR_RE.fullmatch(name) else DEFAULT_OPERATOR


def set_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    response.set_cookie(
        COOKIE, value, max_age=SESSION_S, path=PATH, httponly=True, samesite="Strict", secure=request.secure
    )


def clear_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path=PATH)
