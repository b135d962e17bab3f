"""The lifecycle lines a supervisor may wait for in chatlane's log (`bots.testing` does).

Named here and printed from here by the launcher and the HTTP service, so whoever waits
for them imports these names instead of copying the words; changing a line changes it
for both sides.
"""

from __future__ import annotations

import re

UP = "chatlane is up"
"""Logged by the launcher once every service has started."""

API_AT = "OpenAI-compatible API at"
"""The HTTP service's description: this, then its root URL ending in `/v1`."""

STOPPING = "stopping: finishing in-flight turns"
"""Logged by the launcher when a first SIGTERM/Ctrl-C is taken (a second stops turns now)."""

API_ROOT = re.compile(re.escape(API_AT) + r" (http://\S+?)/v1\b")
"""Finds the HTTP API's `http://HOST:PORT` (group 1) in a log."""
