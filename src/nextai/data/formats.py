"""Record formats: what a row of a dataset holds, how `auto` recognises it, and the column map that renames fields.

Four formats, each normalised into one of three record shapes (`nextai.data.records`):

| `data.format` | a row holds | record |
|---|---|---|
| `alpaca` | `instruction`, optional `input`, `output` | `AlpacaRecord` (the report's prompt) |
| `messages` | `messages`: a list of `{role, content}` (OpenAI's system/user/assistant) | `ChatRecord` |
| `sharegpt` | `conversations`: a list of `{from, value}` (human/gpt) | `ChatRecord` |
| `prompt_completion` | `prompt`, `completion` | `CompletionRecord` |

`columns` maps nextai's names to the dataset's: fields (`instruction`, `input`, `output`, `prompt`, `completion`,
`messages`, `system`), the keys inside a message (`role`, `content`) and role names (`user`, `assistant`,
`system`), e.g. `{instruction: question, output: answer}` or `{messages: dialog, user: human, assistant: bot}`.
"""

from collections.abc import Mapping
from typing import Literal, get_args

from nextai.data.records import AlpacaRecord, ChatRecord, CompletionRecord, Message, Record
from nextai.errors import NextaiError

Format = Literal["auto", "alpaca", "messages", "sharegpt", "prompt_completion"]
FORMATS: tuple[str, ...] = get_args(Format)
ROLES = ("system", "user", "assistant")
FIELDS = ("instruction", "input", "output", "prompt", "completion", "messages", "system")
MESSAGE_KEYS = ("role", "content")
# Role names other datasets use, on top of the column map: ShareGPT's from/value speakers and common variants.
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
                "bing": "assistant", "model": "assistant", "bot": "assistant"}
SHAREGPT = {"role": "from", "content": "value"}  # the keys of a ShareGPT turn
CONVERSATION_FIELDS = ("messages", "conversations")  # where a conversation's turns are, unless mapped


def check_columns(columns: Mapping[str, str] | None, where: str = "data.columns") -> dict[str, str]:
    """The column map with every key checked: one line naming a key nextai does not know."""
    columns = dict(columns or {})
    known = (*FIELDS, *MESSAGE_KEYS, *ROLES)
    for key, value in columns.items():
        if key not in known:
            raise NextaiError(f"{where}: unknown key '{key}'; expected some of {', '.join(known)}")
        if not isinstance(value, str) or not value:
            raise NextaiError(f"{where}.{key}: expected a column or role name, got {value!r}")
    return columns


def check_format(format: str, where: str = "data.format") -> str:
    if format not in FORMATS:
        raise NextaiError(f"{where}: unknown format '{format}'; expected one of {', '.join(FORMATS)}")
    return format


def _defaults(format: str) -> dict[str, str]:
    return dict(SHAREGPT) if format == "sharegpt" else {}


def field_name(columns: Mapping[str, str], format: str, name: str) -> str:
    """The dataset's name for nextai's field or message key `name` in `format`."""
    return columns.get(name) or _defaults(format).get(name) or name


def conversation_field(row: Mapping, columns: Mapping[str, str]) -> str | None:
    """Where a row keeps its turns: the mapped column, else `messages` or `conversations`, whichever it has."""
    if "messages" in columns:
        return columns["messages"] if columns["messages"] in row else None
    return next((name for name in CONVERSATION_FIELDS if name in row), None)


def detect_format(row: Mapping, columns: Mapping[str, str], where: str) -> tuple[str, str]:
    """(format, why) for a row whose format was left `auto`, from the fields it has (through the column map)."""
    def has(format: str, *names: str) -> bool:
        return all(field_name(columns, format, n) in row for n in names)

    turns_field = conversation_field(row, columns)
    if turns_field is not None:
        turns = row[turns_field]
        first = turns[0] if isinstance(turns, list) and turns else None
        sharegpt = isinstance(first, Mapping) and "role" not in columns and "role" not in first and "from" in first
        return ("sharegpt", f"field '{turns_field}' holds from/value turns") if sharegpt else \
            ("messages", f"field '{turns_field}' holds role/content turns")
    if has("alpaca", "instruction", "output"):
        return "alpaca", (f"fields '{field_name(columns, 'alpaca', 'instruction')}' and "
                          f"'{field_name(columns, 'alpaca', 'output')}'")
    if has("prompt_completion", "prompt", "completion"):
        return "prompt_completion", (f"fields '{field_name(columns, 'alpaca', 'prompt')}' and "
                                     f"'{field_name(columns, 'alpaca', 'completion')}'")
    fields = ", ".join(map(repr, row)) or "none"
    raise NextaiError(f"{where}: cannot tell the format from the fields ({fields}): expected messages (OpenAI), "
                      f"conversations (ShareGPT), instruction + output (Alpaca) or prompt + completion; map yours "
                      f"with data.columns or set data.format")


def _text(row: Mapping, column: str, where: str, required: bool = True) -> str:
    if column not in row or row[column] is None:
        if not required:
            return ""
        if column in row:
            raise NextaiError(f"{where}: field '{column}' is empty (null)")
        raise NextaiError(f"{where}: record has no '{column}' field (it has: {', '.join(map(repr, row)) or 'none'})")
    value = row[column]
    if not isinstance(value, str):
        raise NextaiError(f"{where}: field '{column}' must be a string, got {type(value).__name__}: {value!r:.60}")
    return value


def role_of(name: object, columns: Mapping[str, str], where: str) -> str:
    """nextai's role (system/user/assistant) for a dataset's role name, through the column map and the aliases."""
    if not isinstance(name, str):
        raise NextaiError(f"{where}: role must be a string, got {type(name).__name__}: {name!r:.60}")
    mapped = {value: role for role, value in columns.items() if role in ROLES}
    role = mapped.get(name) or (name if name in ROLES else ROLE_ALIASES.get(name.lower()))
    if role is None:
        known = sorted({*ROLES, *ROLE_ALIASES, *mapped})
        raise NextaiError(f"{where}: unknown role '{name}'; known roles: {', '.join(known)} (map yours with "
                          f"data.columns, e.g. {{user: {name}}})")
    return role


def messages_of(row: Mapping, format: str, columns: Mapping[str, str], where: str) -> list[Message]:
    column = conversation_field(row, columns)
    if column is None:
        wanted = columns.get("messages") or "messages' or 'conversations"
        raise NextaiError(f"{where}: record has no '{wanted}' field (it has: {', '.join(map(repr, row)) or 'none'})")
    turns = row[column]
    if not isinstance(turns, list) or not turns:
        raise NextaiError(f"{where}: field '{column}' must be a non-empty list of turns, got {turns!r:.60}")
    role_key, content_key = field_name(columns, format, "role"), field_name(columns, format, "content")
    messages: list[Message] = []
    system = columns.get("system")
    if system and row.get(system):
        messages.append(Message(role="system", content=_text(row, system, where)))
    for index, turn in enumerate(turns):
        here = f"{where} [{column}][{index}]"
        if not isinstance(turn, Mapping):
            raise NextaiError(f"{here}: expected an object with '{role_key}' and '{content_key}', got "
                              f"{type(turn).__name__}")
        for key in (role_key, content_key):
            if key not in turn:
                raise NextaiError(f"{here}: turn has no '{key}' (it has: {', '.join(map(repr, turn)) or 'none'})")
        content = turn[content_key]
        if not isinstance(content, str):
            raise NextaiError(f"{here}: '{content_key}' must be a string, got {type(content).__name__}: "
                              f"{content!r:.60}")
        messages.append(Message(role=role_of(turn[role_key], columns, here), content=content))
    return messages


def to_record(row: object, format: str, columns: Mapping[str, str], where: str, source: str) -> Record:
    """One dataset row as a record of `format` (not `auto`: see `detect_format`), its fields renamed by `columns`.

    Errors name the row (`where`), the field and what was expected."""
    if not isinstance(row, Mapping):
        raise NextaiError(f"{where}: expected an object ({format} record), got {type(row).__name__}")
    tag = str(row.get("source") or source)
    if format == "alpaca":
        return AlpacaRecord(instruction=_text(row, field_name(columns, format, "instruction"), where),
                            input=_text(row, field_name(columns, format, "input"), where, required=False),
                            output=_text(row, field_name(columns, format, "output"), where), source=tag)
    if format == "prompt_completion":
        return CompletionRecord(prompt=_text(row, field_name(columns, format, "prompt"), where),
                                completion=_text(row, field_name(columns, format, "completion"), where), source=tag)
    if format in ("messages", "sharegpt"):
        return ChatRecord(messages=messages_of(row, format, columns, where), source=tag)
    raise NextaiError(f"{where}: unknown format '{format}'")
