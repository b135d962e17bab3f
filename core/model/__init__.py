"""The shapes a message travels in, shared by every room: a message in (`Inbound`),
replies out (`Reply`, through a `Responder`), transcript records (`ChatMessage`), the
session key and its grammar (keys come from HTTP headers too: untrusted input), what
the store keeps (`SessionEntry`, `TurnLease`, `TurnCommit`) and the shared errors.
"""

from __future__ import annotations

from core.model.errors import AgentError, Fenced, StoreError
from core.model.fires import FireClaim, FireMark, FireState, fire_id
from core.model.keys import (
    ANY,
    MAX_KEY_LENGTH,
    KeyParts,
    Scope,
    SessionKey,
    build_key,
    format_key,
    parse_key,
    validate_key,
)
from core.model.messages import (
    AttachmentKind,
    AttachmentRef,
    CancelReason,
    ChatMessage,
    Closed,
    FileSource,
    FileTooLarge,
    FileUnavailable,
    HistorySource,
    Inbound,
    Reply,
    ReplyKind,
    ReplyTarget,
    Responder,
    Role,
)
from core.model.sessions import (
    Admission,
    Damaged,
    FreshCheck,
    Listing,
    Minter,
    RequestClaim,
    SessionEntry,
    SessionStatus,
    TurnCommit,
    TurnLease,
)

__all__ = [
    "ANY",
    "MAX_KEY_LENGTH",
    "Admission",
    "AgentError",
    "AttachmentKind",
    "AttachmentRef",
    "CancelReason",
    "ChatMessage",
    "Closed",
    "Damaged",
    "Fenced",
    "FileSource",
    "FileTooLarge",
    "FileUnavailable",
    "FireClaim",
    "FireMark",
    "FireState",
    "FreshCheck",
    "HistorySource",
    "Inbound",
    "KeyParts",
    "Listing",
    "Minter",
    "Reply",
    "ReplyKind",
    "ReplyTarget",
    "RequestClaim",
    "Responder",
    "Role",
    "Scope",
    "SessionEntry",
    "SessionKey",
    "SessionStatus",
    "StoreError",
    "TurnCommit",
    "TurnLease",
    "build_key",
    "fire_id",
    "format_key",
    "parse_key",
    "validate_key",
]
