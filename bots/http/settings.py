"""`[http]`: the OpenAI-compatible HTTP API's settings."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from core.config import AdapterSettings, SecretNeed


class HttpSettings(AdapterSettings):
    section: ClassVar[str] = "http"
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8765
    token_env: str = "CHATLANE_HTTP_TOKEN"
    max_body_bytes: Annotated[int, Field(gt=0)] = 1_048_576
    header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    """A connection must send a request's complete headers within this long (of opening,
    or of its previous response), or it is closed."""
    body_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    max_connections: Annotated[int, Field(ge=0)] = 0
    """0: derived from the open-file limit (RLIMIT_NOFILE), keeping a quarter for the rest."""
    idempotency_wait_s: Annotated[float, Field(gt=0)] = 300.0
    """A retry with the `Idempotency-Key` of a request still running waits this long
    for its answer, then gets a 409 (and may retry again)."""

    console: bool = False
    """The operator web page at /console (docs/console.md), behind the same token."""

    def secret_needs(self) -> tuple[SecretNeed, ...]:
        """The bearer token is optional: when set, requests must carry it."""
        return (SecretNeed("token_env", required=False),) if self.enabled else ()
