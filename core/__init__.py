"""chatlane's platform-free core: rooms a message walks through, outside in.

    door/          the ONE way in: Gateway (submit, command, stop, status, send), commands,
                   access, dedupe, limits, targets (ReplyTarget -> Responder), resume (the
                   durable inbox after a restart), proactive (sends, schedule fires)
    conversation/  one session per key (reserver), one order per key (lanes, queue modes), routing
    turn/          TurnRunner: lease -> resolve -> context -> agent -> ONE fenced commit -> deliver
    agents/        the Agent contract (base), echo, openai, plugins
    store/         protocols in parts (base: sessions, ledger, inbox, fires, ...), files/ and redis/
    ops/           logs, metrics, owned tasks, the scheduler of [[schedules]]
    model/         shapes every room shares: Inbound, Reply, ReplyTarget, ChatMessage, keys, errors
    config.py      TOML -> frozen typed config; adapters add their own sections
Rooms import downward only, through each other's __init__; core never imports bots or an SDK.
"""
