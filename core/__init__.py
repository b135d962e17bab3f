"""chatlane's platform-free core. It never imports `bots` or a platform SDK.

The layers, outside in (each module only calls the ones below it):

    gateway.py      the ONE door: submit(inbound, responder), reset(key), choose_model(key),
                    stop(key), status(key), forget(key)
    turns.py        the gateway's other half, the turn pipeline (lock -> resolve -> tail ->
                    backfill? -> compaction? -> agent -> one fenced commit -> deliver)
    dedupe.py       at the door: a platform delivery answered once across processes
                    (Deliveries), arrival order kept (InOrder), retried requests (Requests)
    limits.py       at the door: `[limits]` per sender, counted in the store
    routing.py      which agent answers: [[bindings]], first match wins, else the default
    compaction.py   summary + recent records once a history passes its budget
    model_choice.py /model: the texts and rules of a conversation's model choice
    context.py      what a turn knows besides its messages: thread backfill on a session's
                    first turn, attachments read (attachments.py, fetch.py) and their blobs
    lanes.py        one lane per session key: turns of a key in order; queue modes
    reserver.py     key -> session: hot read, else reserve (lock, re-check, mint) once
    store/          SessionStore backends: files.py (+ jsonl.py transcripts, blobs.py
                    attachment bytes, deliveries.py markers and counters), redis.py
                    (+ redis_lock.py, redis_blobs.py, redis_deliveries.py); entries.py is
                    the entry format both share
    agents/         the public agent API (`core.agents`: Agent, TurnInput, PROTOCOL_VERSION),
                    built-ins echo (offline) and openai, plugins (factory, entry points)
    types.py        the contracts everything builds on (Inbound, Reply, SessionEntry,
                    TurnLease, TurnCommit, the Agent and SessionStore protocols)

Beside them: keys.py (session key grammar), config.py (TOML -> frozen config; adapters
add their own sections), access.py (allowlists: Seen, Facts, admit), chunking.py, tasks.py
(owned tasks), responders.py, metrics.py, logs.py, and testing/ (fake agents, a
process runner and a redis-server runner, shipped for tests and bench).
"""
