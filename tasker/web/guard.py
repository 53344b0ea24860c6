"""Who may act: the bearer token of the JSON API, the signed-in session of the
pages' forms, and the same-origin check of every POST.

A POST from another origin is refused with 403 before anything else (the
browser's `Origin`, or `Sec-Fetch-Site: cross-site`, says where it came
from); then the API wants `Authorization: Bearer <token>` (401 without) and
a form wants the session cookie set by signing in with the token plus the
form's hidden `csrf` field (401/403). The cookie and the field are HMACs of
the token, so the token itself never appears in a page or a cookie.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from starlette.requests import Request

SESSION_COOKIE = "tasker_session"


class Refused(Exception):
    """A request the guard turns away; `status` is 401 or 403."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Guard:
    """Checks for action requests, keyed by the dashboard's token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def _mac(self, purpose: str) -> str:
        return hmac.new(self._token.encode(), purpose.encode(), hashlib.sha256).hexdigest()

    @property
    def session_value(self) -> str:
        """What the session cookie holds once signed in."""
        return self._mac("session")

    @property
    def csrf_value(self) -> str:
        """What every form of a signed-in page carries in its `csrf` field."""
        return self._mac("csrf")

    def token_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._token.encode())

    def signed_in(self, request: Request) -> bool:
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.session_value.encode())

    def check_origin(self, request: Request) -> None:
        """403 unless the request comes from this dashboard's own origin (or no browser)."""
        if request.headers.get("sec-fetch-site", "") == "cross-site":
            raise Refused(403, "cross-site request refused")
        origin = request.headers.get("origin") or _origin_of(request.headers.get("referer"))
        if origin is None:
            return  # not a browser (curl, a script): the token decides
        own = f"{request.url.scheme}://{request.url.netloc}"
        if origin.lower() != own.lower():
            raise Refused(403, "request from another origin refused")

    def check_bearer(self, request: Request) -> None:
        """401 unless `Authorization: Bearer <token>` is present and right."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.token_matches(given.strip()):
            raise Refused(401, "missing or wrong bearer token (Authorization: Bearer ...)")

    def check_form(self, request: Request, csrf: str) -> None:
        """401 unless signed in; 403 unless the form's csrf field is this dashboard's."""
        if not self.signed_in(request):
            raise Refused(401, "sign in with the dashboard's token first")
        if not hmac.compare_digest(csrf.encode(), self.csrf_value.encode()):
            raise Refused(403, "the form's csrf field is missing or wrong")


def _origin_of(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "null"
