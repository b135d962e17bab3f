"""The errors every room may raise or catch."""

from __future__ import annotations


class Fenced(Exception):
    """A commit was refused, or the turn lock was lost: a newer holder of the key's turn
    lock exists, or the key now maps to another session. Nothing of the turn was stored."""


class AgentError(Exception):
    """The agent could not answer; the message is for the log, never for the user."""


class StoreError(Exception):
    """The store could not complete an operation; nothing was reported as done."""
