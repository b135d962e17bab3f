"""Session stores: `files` (embedded, one host) and `redis` (many hosts)."""

from __future__ import annotations

from core.config import Loaded
from core.types import SessionStore


def open_store(loaded: Loaded) -> SessionStore:
    """The store the config asks for; backends load lazily so `files` needs no redis."""
    settings = loaded.config.store
    if settings.backend == "redis":
        from core.store.redis import RedisStore

        password = loaded.secrets.get(settings.password_env)
        return RedisStore.from_settings(settings, password.get_secret_value() if password else None)
    from core.store.files import FileStore

    return FileStore(loaded.state_dir)
