"""The console's HTML, rendered on the server: every value passes `esc` (keys, texts,
names come from chat users and are untrusted). No inline script or style: the page's
JavaScript and CSS are static files (the CSP allows 'self' only). Times are ISO UTC in
`<time datetime>`; console.js shows them in the viewer's time zone.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from core.model import ChatMessage, SessionEntry

TITLE = "chatlane console"
EMPTY_LIST_TEXT = (
    "No conversations yet. They appear here once someone talks to the bot "
    "(on Discord, Slack, the API or the terminal)."
)
EMPTY_FILTERED_TEXT = (
    "No conversation on this page matches the filter. Try the next page, or clear the filter."
)
EMPTY_TRANSCRIPT_TEXT = "Nothing said in this session yet (a new session starts empty)."
LIVE_TEXT = "An answer is being produced."
NOT_LIVE_TEXT = "No answer is being produced by this process right now."


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def when(ts: float) -> str:
    """A timestamp as `<time>`: ISO UTC for machines and for readers without JS."""
    if not ts:
        return "-"
    iso = datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return f'<time datetime="{iso}">{esc(iso.replace("T", " ").replace("Z", " UTC"))}</time>'


def conversation_url(key: str) -> str:
    return "/console/c/" + quote(key, safe="")


def layout(title: str, body: str, *, operator: str | None = None, csrf: str = "", notice: str = "") -> str:
    nav = ""
    if operator is not None:
        nav = (
            '<nav aria-label="Console"><a href="/console">Conversations</a> '
            '<a href="/console/health">Health</a> '
            f'<form method="post" action="/console/logout" class="inline">{hidden(csrf)}'
            f'<button type="submit">Log out {esc(operator)}</button></form></nav>'
        )
    flash = f'<p class="notice" role="status">{esc(notice)}</p>' if notice else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} - {TITLE}</title>"
        '<link rel="icon" href="/console/static/favicon.svg">'
        '<link rel="stylesheet" href="/console/static/console.css">'
        '<script src="/console/static/console.js" defer></script></head>'
        f'<body><header><a class="brand" href="/console">{TITLE}</a>{nav}</header>'
        f"<main>{flash}<h1>{esc(title)}</h1>{body}</main></body></html>"
    )


def hidden(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(csrf)}">' if csrf else ""


def login(problem: str, token_needed: bool) -> str:
    token = (
        '<p><label for="token">API token</label> '
        '<input id="token" name="token" type="password" autocomplete="current-password" '
        "required autofocus></p>"
        if token_needed
        else "<p>No token is configured (loopback only): anyone on this machine may enter.</p>"
    )
    wrong = f'<p class="error" role="alert">{esc(problem)}</p>' if problem else ""
    return layout(
        "Log in",
        f'{wrong}<form method="post" action="/console/login">{token}'
        '<p><label for="operator">Your name (for the log)</label> '
        '<input id="operator" name="operator" maxlength="64" autocomplete="username"></p>'
        '<p><button type="submit">Log in</button></p></form>',
    )


def conversation_list(
    rows: Sequence[SessionEntry],
    running: dict[str, float],
    pending: dict[str, int],
    filters: dict[str, str],
    after: str,
    next_cursor: str,
    scanned: int,
    split: dict[str, tuple[str, str, str]],
    *,
    operator: str,
    csrf: str,
) -> str:
    fields = "".join(
        f'<label for="f-{name}">{name.capitalize()}</label> '
        f'<input id="f-{name}" name="{name}" value="{esc(filters.get(name, ""))}" size="14"> '
        for name in ("platform", "channel", "user")
    )
    form = (
        f'<form method="get" action="/console" class="filters">{fields}'
        '<button type="submit">Filter</button> <a href="/console">Clear</a></form>'
    )
    now = time.time()
    body_rows = []
    for e in rows:
        platform, user, channel = split.get(e.key, (e.platform, "", ""))
        started = running.get(e.key)
        live = f"running for {now - started:.0f} s" if started is not None else "-"
        body_rows.append(
            f'<tr><td><a href="{esc(conversation_url(e.key))}"><code>{esc(e.key)}</code></a></td>'
            f"<td>{esc(platform)}</td><td>{esc(user)}</td><td>{esc(channel)}</td>"
            f'<td class="num">{e.turns}</td><td>{when(e.last_interaction_at)}</td>'
            f'<td class="num">{pending.get(e.key, 0)}</td>'
            f"<td>{esc(live)}</td><td>{esc(e.model or 'default')}</td></tr>"
        )
    if body_rows:
        table = (
            "<table><caption>Conversations (store order, one page)</caption><thead><tr>"
            '<th scope="col">Key</th><th scope="col">Platform</th><th scope="col">User</th>'
            '<th scope="col">Channel</th><th scope="col">Turns</th><th scope="col">Last activity</th>'
            '<th scope="col">Pending</th><th scope="col">Running turn (here)</th>'
            '<th scope="col">Model</th></tr></thead>'
            f"<tbody>{''.join(body_rows)}</tbody></table>"
        )
    else:
        empty = EMPTY_FILTERED_TEXT if any(filters.values()) or after else EMPTY_LIST_TEXT
        table = f'<p class="empty">{esc(empty)}</p>'
    links = []
    if after:
        links.append(f'<a href="/console?{esc(urlencode(filters))}">First page</a>')
    if next_cursor:
        query = urlencode({**filters, "after": next_cursor})
        links.append(f'<a rel="next" href="/console?{esc(query)}">Next page</a>')
    pager = (
        f'<nav class="pager" aria-label="Pages">{" ".join(links)} <span>({scanned} entries read)</span></nav>'
    )
    return layout("Conversations", form + table + pager, operator=operator, csrf=csrf)


def transcript(records: Sequence[ChatMessage], older: str, newer: str) -> str:
    if not records:
        return f'<p class="empty">{esc(EMPTY_TRANSCRIPT_TEXT)}</p>'
    items = []
    for m in records:
        if m.tool:  # a tool call: folded to its one line, the arguments one click away
            items.append(
                f'<li class="msg tool"><details><summary><strong>tool {esc(m.tool)}</strong> '
                f"{when(m.at)} {esc(m.content.splitlines()[0] if m.content else '')}</summary>"
                f"<pre>{esc(m.content)}</pre>"
                + (f"<pre>{esc(m.tool_arguments)}</pre>" if m.tool_arguments else "")
                + "</details></li>"
            )
            continue
        files = "".join(f"<li>{esc(a.name)} ({esc(a.mime)}, {a.size} bytes)</li>" for a in m.attachments)
        marks = " (interrupted)" if m.interrupted else ""
        marks += " (summary)" if m.summary else ""
        marks += " (earlier thread message)" if m.backfill else ""
        who = m.author or m.role
        items.append(
            f'<li class="msg {esc(m.role)}"><p class="meta"><strong>{esc(who)}</strong>{esc(marks)} '
            f"{when(m.at)}</p><pre>{esc(m.content)}</pre>"
            + (f'<ul class="files" aria-label="Attachments">{files}</ul>' if files else "")
            + "</li>"
        )
    pager = []
    if older:
        pager.append(f'<a href="{esc(older)}">Older messages</a>')
    if newer:
        pager.append(f'<a href="{esc(newer)}">Newer messages</a>')
    nav = f'<nav class="pager" aria-label="Transcript pages">{" ".join(pager)}</nav>' if pager else ""
    return f'{nav}<ol class="transcript">{"".join(items)}</ol>{nav}'


def conversation(
    key: str,
    entry: SessionEntry | None,
    facts: Iterable[tuple[str, str]],
    models: Sequence[str],
    live: str,
    running: bool,
    transcript_html: str,
    pending_html: str,
    *,
    operator: str,
    csrf: str,
    notice: str,
) -> str:
    url = conversation_url(key)
    rows = "".join(f"<tr><th scope='row'>{esc(k)}</th><td>{v}</td></tr>" for k, v in facts)
    chosen = entry.model if entry is not None else None
    options = "".join(
        f'<option value="{esc(m)}"{" selected" if m == chosen else ""}>{esc(m)}</option>' for m in models
    )
    model_form = (
        f'<form method="post" action="{esc(url)}/model">{hidden(csrf)}'
        f'<label for="model">Model</label> <select id="model" name="model">{options}</select> '
        '<button type="submit">Change model</button></form>'
        if models
        else "<p>This agent has no models to choose from (agents.*.models).</p>"
    )
    actions = (
        '<section aria-labelledby="actions-h"><h2 id="actions-h">Actions</h2>'
        f'<form method="post" action="{esc(url)}/stop" class="inline">{hidden(csrf)}'
        '<button type="submit" id="stop">Stop the answer</button></form> '
        f'<form method="post" action="{esc(url)}/new" class="inline">{hidden(csrf)}'
        f'<button type="submit" id="new">New session</button></form>{model_form}'
        f'<form method="post" action="{esc(url)}/notice">{hidden(csrf)}'
        '<p><label for="notice-text">Send a notice</label><br>'
        '<textarea id="notice-text" name="text" rows="3" cols="60" maxlength="4000" required></textarea></p>'
        '<p><label><input type="radio" name="mode" value="notice" checked> say it as is</label> '
        '<label><input type="radio" name="mode" value="prompt"> let the agent answer it</label> '
        '<button type="submit">Send</button></p></form></section>'
    )
    live_html = (
        f'<section aria-labelledby="live-h" id="live-section" data-live="{esc(url)}/live">'
        '<h2 id="live-h">Live answer</h2>'
        f'<p id="live-state" role="status">{esc(LIVE_TEXT if running else NOT_LIVE_TEXT)}</p>'
        f'<pre id="live" aria-live="polite">{esc(live)}</pre>'
        '<pre id="live-last" hidden title="The previous answer streamed while this page was open"></pre>'
        "</section>"
    )
    body = (
        f'<table class="facts">{rows}</table>{actions}{live_html}'
        '<section aria-labelledby="p-h"><h2 id="p-h">Pending (the durable inbox)</h2>'
        f"{pending_html}</section>"
        '<section aria-labelledby="t-h"><h2 id="t-h">Transcript (newest last)</h2>'
        f"{transcript_html}</section>"
    )
    return layout(f"Conversation {key}", body, operator=operator, csrf=csrf, notice=notice)


def error_page(status: int, text: str, operator: str | None = None, csrf: str = "") -> str:
    return layout(
        f"{status}",
        f'<p class="error">{esc(text)}</p><p><a href="/console">Back to the conversations</a></p>',
        operator=operator,
        csrf=csrf,
    )
