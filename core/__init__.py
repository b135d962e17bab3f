"""chatlane's platform-free core. It never imports `bots` or a platform SDK.

Rooms, in the order a message meets them (each imports only the rooms after it, and
only through their package `__init__`; tests/test_import_contract.py checks it):

    door/          the ONE way in: `Gateway` (submit, reset, stop, status, choose_model);
                   access, dedupe of deliveries and requests, `[limits]`, reply targets
    conversation/  key -> session (reserver), one lane per key (queue modes), routing
    turn/          `TurnRunner`: lease -> resolve -> context -> agent -> commit -> deliver;
                   attachments, fetch, compaction, /model, streaming, chunking, responders
    agents/        the public agent API (`core.agents`), echo, openai, plugins
    store/         protocols in parts (base.py); files/ and redis/ backends
    ops/           logs, metrics, owned tasks
    model/         the shapes a message travels in (Inbound, Reply, ChatMessage, keys,
                   errors); config.py parses the TOML once into frozen settings

The shipped test kit (fakes, test agents, process and redis-server runners) is
`bots.testing`.
"""
