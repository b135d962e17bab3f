"""Where conversations are kept: small protocols (`base.py`) that the embedded `files/`
backend and the scale-out `redis/` backend implement; `entries.py` and `jsonl.py` are
the entry and record formats both share.
"""

from __future__ import annotations

from core.config import Loaded
from core.store.base import (
    Approvals,
    BlobStore,
    Deliveries,
    Ledger,
    SenderLimits,
    Sessions,
    SessionStore,
    Signals,
)
from core.store.entries import SESSION_ID
from core.store.redis.urls import safe_url, url_problem

__all__ = [
    "SESSION_ID",
    "Approvals",
    "BlobStore",
    "Deliveries",
    "Ledger",
    "SenderLimits",
    "SessionStore",
    "Sessions",
    "Signals",
    "open_store",
    "safe_url",
    "url_problem",
]


def open_store(loaded: Loaded) -> SessionStore:
    """The store the config asks for; backends load lazily so `files` needs no redis."""
    settings = loaded.config.store
    if settings.backend == "redis":
        from core.store.redis.store import RedisStore

        password = loaded.secrets.get(settings.password_env)
        return RedisStore.from_settings(settings, password.get_secret_value() if password else None)
    from core.store.files.store import FileStore

    return FileStore(loaded.state_dir)
