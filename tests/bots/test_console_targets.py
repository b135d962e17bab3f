"""The console's reply target: a line one console process took but did not answer before
it stopped is answered by the next process on the same store, printed there (nobody else
to send it to), once, and kept in the session."""

from __future__ import annotations

import io
from pathlib import Path

from bots.console import LATE_ANSWER_NOTE, _say, register_targets
from bots.launcher import load_config
from bots.runtime import Runtime
from bots.testing import SlowStreamAgent, eventually


async def test_a_line_cut_off_by_a_restart_is_answered_and_printed_by_the_next_console(
    tmp_path: Path,
) -> None:
    config = tmp_path / "chatlane.toml"
    config.write_text('[store]\npath = "state"\n[http]\nenabled = false\n', encoding="utf-8")
    agent = SlowStreamAgent(40, 0.05)
    first = Runtime.build(load_config(config, env={}), agent=agent)
    first.gateway.start()
    register_targets(first, io.StringIO())
    await _say(first, "me", "tell me a story")
    await eventually(agent.streaming.is_set)
    await first.gateway.close(timeout=0)  # no drain: as a second Ctrl-C does
    await first.close()
    second = Runtime.build(load_config(config, env={}), agent=SlowStreamAgent(4, 0.01))
    out = io.StringIO()
    try:
        second.gateway.start()
        register_targets(second, out)
        answer = SlowStreamAgent(4, 0.01).text_for(1, "tell me a story")
        await eventually(lambda: answer in out.getvalue())
        assert out.getvalue() == f"{LATE_ANSWER_NOTE}\n{answer}\n"
    finally:
        await second.close()
