"""Redis URLs as chatlane prints them: never any part of the userinfo (user or password)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def safe_url(url: str) -> str:
    """`url` with no part of its userinfo (user or password) and no `password=` option.

    The userinfo ends at the URL's LAST `@`: a password holding `#`, `?`, `/` or `@`
    (not percent-encoded) would make a standard parser end the host early and print part
    of the password as a "host" or "fragment".
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<unparsable URL>"
    _userinfo, at, rest = rest.rpartition("@")
    masked = f"{scheme}://{'***@' if at else ''}{rest}"
    try:
        parts = urlsplit(masked)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number
    except ValueError:
        return f"{scheme}://{'***@' if at else ''}<unparsable host>"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k.lower() != "password"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


BAD_URL_HINT = (
    "percent-encode any / ? # @ : in the password (e.g. # as %23), or put the password in the "
    "environment variable named by store.password_env"
)
REDIS_SCHEMES = ("redis", "rediss", "unix")


def url_problem(url: str) -> str:
    """Why redis-py would refuse `url`, in words that quote no part of it."""
    scheme = url.partition("://")[0].lower()
    if scheme not in REDIS_SCHEMES:
        return "it must start with redis://, rediss:// (TLS) or unix://"
    return BAD_URL_HINT
