"""`/model`: show or switch the model of one conversation (agents with `models = [...]`).

The choice is stored on the conversation's session entry (`SessionEntry.model`), so it
survives restarts and every process sharing the store sees it; the gateway changes it
through the conversation's lane, in order with its messages. Only names in the agent's
`models` list can be chosen.
"""

from __future__ import annotations

from core.config import AgentSettings

MODEL_SHOWN_TEXT = "This conversation uses {current}. Choices: {choices}. Switch with `{command} NAME`."
MODEL_SET_TEXT = "This conversation now uses {model}."
MODEL_UNCHANGED_TEXT = "This conversation already uses {model}."
MODEL_REFUSED_TEXT = "{name} is not one of the choices here: {choices}."
NO_MODELS_TEXT = "There are no models to choose from here."
MODEL_NAME_LIMIT = 200


def parse_command(text: str, command: str) -> str | None:
    """The argument of a `/model [NAME]` message ("" for none), or None when it is not one."""
    if not command:
        return None
    words = text.strip().split(maxsplit=1)
    if not words or words[0].lower() != command.lower():
        return None
    return words[1].strip() if len(words) > 1 else ""


def default_model(settings: AgentSettings) -> str:
    """What a conversation uses before it chooses: the openai model, else the first choice."""
    if settings.backend == "openai":
        return settings.openai.model
    return settings.models[0] if settings.models else ""


def effective(settings: AgentSettings, chosen: str | None) -> str | None:
    """The stored choice while it is still allowed (the list may have changed since)."""
    return chosen if chosen is not None and chosen in settings.models else None


def describe(settings: AgentSettings, chosen: str | None, command: str) -> str:
    current = effective(settings, chosen) or f"{default_model(settings)} (the default)"
    return MODEL_SHOWN_TEXT.format(current=current, choices=", ".join(settings.models), command=command)


def refusal(settings: AgentSettings, name: str) -> str:
    shown = name if len(name) <= MODEL_NAME_LIMIT else name[:MODEL_NAME_LIMIT] + "…"
    return MODEL_REFUSED_TEXT.format(name=shown, choices=", ".join(settings.models))
