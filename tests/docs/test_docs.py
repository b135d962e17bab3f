"""README.md and docs/*.md as a reader uses them: their configs load, their links lead
somewhere, their `chatlane` commands exist, and the README stays a front door.

A ```toml block is loaded as a whole config file by the loader the CLI uses; a block
that is deliberately not a config (a pyproject snippet, say) is preceded by
`<!-- not-a-config -->` and is only parsed as TOML.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from bots.launcher import load_config
from bots.testing import run_cli
from core.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 12_000
RUN_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e . && "
    ".venv/bin/chatlane run --config config.example.toml"
)
TEST_COMMAND = "bash .ci/run"
NOT_A_CONFIG = "<!-- not-a-config -->"
SHELL_LANGUAGES = ("sh", "bash", "shell", "console")
HELP_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    """1-based line of the opening fence."""
    lang: str
    text: str
    not_a_config: bool
    """The last non-blank line before the fence is `<!-- not-a-config -->`."""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")


def _lines_and_blocks(page: Path) -> tuple[list[tuple[int, str]], list[Block]]:
    """The page's prose lines (number, text) outside fences, and its fenced blocks."""
    prose: list[tuple[int, str]] = []
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        fence, lang = opening.groups()
        before = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j])
            j += 1
        if j == len(lines):
            raise AssertionError(f"{page.relative_to(ROOT)}:{i + 1}: code block never closed")
        blocks.append(Block(page, i + 1, lang.lower(), "\n".join(body) + "\n", before == NOT_A_CONFIG))
        i = j + 1
    return prose, blocks


@cache
def _parsed(page: Path) -> tuple[list[tuple[int, str]], list[Block]]:
    return _lines_and_blocks(page)


def _blocks(*langs: str) -> list[Block]:
    return [b for page in PAGES for b in _parsed(page)[1] if b.lang in langs]


class EveryVariableSet(Mapping[str, str]):
    """An environment where every variable a config names is set, so a documented
    `enabled = true` finds its token (the values are placeholders)."""

    def __getitem__(self, name: str) -> str:
        return f"placeholder-for-{name}"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


# ---- TOML blocks -------------------------------------------------------------------------


@pytest.mark.parametrize("block", _blocks("toml"), ids=lambda b: b.where)
def test_every_toml_block_parses(block: Block) -> None:
    try:
        tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as exc:
        pytest.fail(f"{block.where}: not valid TOML: {exc}")


@pytest.mark.parametrize("block", [b for b in _blocks("toml") if not b.not_a_config], ids=lambda b: b.where)
def test_every_config_block_loads_as_the_cli_loads_it(block: Block, tmp_path: Path) -> None:
    """A documented config (whole or a fragment: every other key takes its default) is
    accepted by `chatlane run`'s own loader: no unknown key, no wrong type."""
    path = tmp_path / "chatlane.toml"
    path.write_text(block.text, encoding="utf-8")
    try:
        load_config(path, env=EveryVariableSet())
    except ConfigError as exc:
        pytest.fail(
            f"{block.where}: {exc.key or 'config'}: {exc.problem}  (mark it {NOT_A_CONFIG} if it is not one)"
        )


def test_the_config_check_refuses_a_wrong_key(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is refused by the same loader."""
    path = tmp_path / "chatlane.toml"
    path.write_text('[agent]\nbackend = "echo"\nhistory_limt = 4\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="history_limt"):
        load_config(path, env=EveryVariableSet())


# ---- links and anchors -------------------------------------------------------------------

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation other than
    `-` and `_` removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a page (repeated headings get -1, -2, ... as on GitHub)."""
    counts: dict[str, int] = {}
    found = set()
    for _, line in _parsed(page)[0]:
        heading = _HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading.group(2))
        n = counts.get(base, 0)
        counts[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def _links(page: Path) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for number, line in _parsed(page)[0]:
        for match in _LINK.finditer(_CODE_SPAN.sub("", line)):
            out.append((number, match.group(1)))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    broken = []
    for number, target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{page.name}:{number}: {target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{page.name}:{number}: {target}: no heading #{anchor} in {dest.name}")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_listed_in_the_index() -> None:
    index = ROOT / "docs" / "index.md"
    listed = {(index.parent / target.partition("#")[0]).resolve() for _, target in _links(index)}
    missing = [p.name for p in PAGES if p.parent == index.parent and p != index and p not in listed]
    assert not missing, f"docs/index.md does not list {missing}"


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Thread history, images and files", "thread-history-images-and-files"),
        ("`Idempotency-Key` on the HTTP API", "idempotency-key-on-the-http-api"),
        (
            "Worked example: Slack HTTP mode behind a load balancer",
            "worked-example-slack-http-mode-behind-a-load-balancer",
        ),
    ],
)
def test_slugs_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


# ---- the README --------------------------------------------------------------------------


def test_the_readme_is_a_front_door_not_the_manual() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size:,} bytes (at most {README_MAX_BYTES:,}): move detail to docs/"
    )


@pytest.mark.parametrize("command", [RUN_COMMAND, TEST_COMMAND])
def test_the_readme_shows_the_run_and_test_commands_verbatim(command: str) -> None:
    """The two set-up commands are lines of a shell block, exactly as a person pastes them."""
    lines = {
        line.strip() for b in _parsed(README)[1] if b.lang in SHELL_LANGUAGES for line in b.text.splitlines()
    }
    assert command in lines


def test_the_test_command_runs_every_check() -> None:
    """`bash .ci/run` is the one command: lint, format, types and tests."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for step in ("ruff check", "ruff format --check", "mypy", "pytest"):
        assert step in script


# ---- chatlane commands -------------------------------------------------------------------

_SEPARATORS = {";", "&", "&&", "|", "||", "(", ")", "$(", "`"}
_REDIRECTS = {"<", ">", ">>", "<<", "2>", "&>"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _shell_lines(block: Block) -> Iterator[str]:
    """The commands of a block: continuation lines joined; in a console block only the
    lines after a `$ ` prompt (the rest is output)."""
    text = block.text.replace("\\\n", " ")
    for line in text.splitlines():
        if block.lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if line.strip():
            yield line


def chatlane_invocations(line: str) -> list[list[str]]:
    """The arguments of every `chatlane ...` (or `python -m bots ...`) command on a shell line."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token in _SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    found = []
    for words in commands:
        while words and _ASSIGNMENT.match(words[0]):
            words = words[1:]
        if not words:
            continue
        if words[0].rsplit("/", 1)[-1] == "chatlane":
            args = words[1:]
        elif re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", words[0]) and words[1:3] == ["-m", "bots"]:
            args = words[3:]
        else:
            continue
        kept: list[str] = []
        skip = False
        for word in args:
            if skip:
                skip = False
            elif word in _REDIRECTS:
                skip = True
            else:
                kept.append(word)
        found.append(kept)
    return found


@cache
def _help(path: tuple[str, ...]) -> str:
    """`chatlane PATH... --help` through the real entry point; fails unless it exits 0."""
    done = run_cli(*path, "--help", cwd=ROOT, timeout=HELP_TIMEOUT_S)
    assert done.returncode == 0, f"`chatlane {' '.join(path)} --help` exited {done.returncode}: {done.stderr}"
    return done.stdout


def _takes_value(help_text: str) -> set[str]:
    """Options shown with a metavar or choices in a help text (`--log-level {DEBUG,...}`)."""
    return set(re.findall(r"(--?[\w-]+)[ =](?:\{|[A-Z])", help_text))


def _subcommands(help_text: str) -> set[str]:
    """The choices of a help text's subcommand positional (`{run,chat,check,sessions}`)."""
    found = re.search(r"^\s+\{([\w,-]+)\}", help_text, re.M)
    return set(found.group(1).split(",")) if found else set()


def _command_path(args: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """(subcommand path, options used) of one invocation, walking the real CLI's help:
    options before a subcommand belong to the level above it."""
    path: tuple[str, ...] = ()
    options: list[str] = []
    level_help = _help(path)
    words = iter(args)
    for word in words:
        if word.startswith("-") and word != "-":
            option = word.split("=", 1)[0]
            options.append(option)
            if "=" not in word and option in _takes_value(level_help):
                next(words, None)
            continue
        if path and not _subcommands(level_help):
            break  # a positional argument (KEY, ...): the rest are this command's options
        path = (*path, word)
        level_help = _help(path)
    options.extend(w.split("=", 1)[0] for w in words if w.startswith("-") and w != "-")
    return path, options


def _shown_commands() -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for block in _blocks(*SHELL_LANGUAGES):
        for line in _shell_lines(block):
            try:
                invocations = chatlane_invocations(line)
            except ValueError as exc:  # unbalanced quotes
                raise AssertionError(f"{block.where}: not a shell line: {line!r}: {exc}") from None
            out.extend((block.where, args) for args in invocations)
    return out


def test_the_docs_show_chatlane_commands() -> None:
    """The check below has something to check: run, chat and check at least."""
    shown = {args[0] for _, args in _shown_commands() if args}
    assert {"run", "chat", "check"} <= shown


def test_every_chatlane_command_shown_exists_with_its_options() -> None:
    """Each distinct subcommand shown in a shell block answers `--help` with exit 0
    through `python -m bots`, and lists every option the docs pass it."""
    problems = []
    for where, args in _shown_commands():
        try:
            path, options = _command_path(args)
        except AssertionError as exc:
            problems.append(f"{where}: chatlane {' '.join(args)}: {exc}")
            continue
        known = _help(path)
        for option in options:
            if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", known):
                problems.append(f"{where}: chatlane {' '.join(args)}: no option {option}")
    assert not problems, "\n".join(problems)


# ---- runnable examples -------------------------------------------------------------------

EXAMPLE_PAGES = [ROOT / "docs" / "testing-your-agent.md"]
EXAMPLE_TIMEOUT_S = 60.0


@pytest.mark.parametrize(
    "block", [b for b in _blocks("python") if b.page in EXAMPLE_PAGES], ids=lambda b: b.where
)
def test_the_examples_for_plugin_authors_run(block: Block, tmp_path: Path) -> None:
    """Each Python block of the page is a whole program: run as a reader would, it exits 0
    and prints what its agent answered through the fake platform."""
    script = tmp_path / "example.py"
    script.write_text(block.text, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"{block.where}:\n{done.stderr}"
    assert "HELLO THERE" in done.stdout


def test_the_plugin_author_page_has_both_examples() -> None:
    blocks = [b for b in _blocks("python") if b.page in EXAMPLE_PAGES]
    assert len(blocks) == 2
    assert "FakeDiscord" in blocks[0].text and "FakeSlack" in blocks[1].text
