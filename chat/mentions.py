"""Addressing: which agents a message names at its start (`@coder @reviewer ...`).

A message that starts with one or more `@<agent name>` goes to those agents,
one run each in mention order; without a leading mention it goes to the
thread's default agent. Only leading mentions address: an `@name` later in
the text is just text. chat/services.py resolves the names against the
thread's agents; agents/prompts.py sends the model the text without them.
"""

from __future__ import annotations

import re

# One leading mention: `@name`, optionally followed by `,` or `:`, then
# whitespace or the end of the message. Agent names are slugs.
LEADING_MENTION = re.compile(r"@([A-Za-z0-9_-]+)[,:]?(?:\s+|\Z)")


def message_mentions(text: str) -> tuple[list[str], str]:
    """The agent names the message starts with (in order, each once) and the
    text after them; `([], text)` for a message without a leading mention."""
    if not text.lstrip().startswith("@"):
        return [], text
    names: list[str] = []
    position = len(text) - len(text.lstrip())
    while match := LEADING_MENTION.match(text, position):
        name = match.group(1)
        if name not in names:
            names.append(name)
        position = match.end()
    if not names:
        return [], text
    return names, text[position:]


def prompt_text(text: str) -> str:
    """What the model is sent of a user message: its text without the leading
    mentions (the whole text when it is nothing but mentions)."""
    names, rest = message_mentions(text)
    return rest if names and rest.strip() else text
