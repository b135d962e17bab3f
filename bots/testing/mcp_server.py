"""A tiny MCP server (the official `mcp` SDK) for tests, benchmarks and plugin authors.

    command = [sys.executable, "-m", "bots.testing.mcp_server"]   # stdio
    python -m bots.testing.mcp_server --http PORT                  # url = "http://127.0.0.1:PORT/mcp"
    env = { CALLS_FILE = "/tmp/calls" }                            # one line per call

Tools: `lookup(word)` answers "the meaning of WORD is ..." (what a test checks the answer
used); `delete_file(path)` (a side effect to approve); `crash()` exits the server at
once; `hang()` never returns; `huge()` returns 10 MB of text. Every call appends its
tool name to `CALLS_FILE` (when set) first, so a test counts calls across restarts.
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp.server.fastmcp import FastMCP

HUGE_BYTES = 10 * 1024 * 1024

server = FastMCP("chatlane-test-tools", log_level="WARNING")  # no line per request


def _count(tool: str) -> None:
    path = os.environ.get("CALLS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(tool + "\n")
            f.flush()
            os.fsync(f.fileno())


def meaning(word: str) -> str:
    """What `lookup` answers for `word` (tests compare the model's answer with it)."""
    return f"the meaning of {word} is {word[::-1]}-{len(word)}"


@server.tool()
def lookup(word: str) -> str:
    """Look up the meaning of a word."""
    _count("lookup")
    return meaning(word)


@server.tool()
def delete_file(path: str) -> str:
    """Delete a file (pretend): a side effect worth a person's approval."""
    _count("delete_file")
    return f"deleted {path}"


@server.tool()
def crash() -> str:
    """Exit the server process at once."""
    _count("crash")
    os._exit(3)


@server.tool()
async def hang() -> str:
    """Never answer."""
    _count("hang")
    await anyio.sleep(3600)
    return "never"


@server.tool()
def huge() -> str:
    """Return 10 MB of text."""
    _count("huge")
    return "x" * HUGE_BYTES


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":  # streamable HTTP on 127.0.0.1:PORT/mcp
        server.settings.port = int(sys.argv[2])
        server.run("streamable-http")
    else:
        server.run("stdio")
