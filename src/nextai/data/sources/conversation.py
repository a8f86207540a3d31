"""Multi-turn conversations as one Alpaca record: the last user turn asks, the earlier turns are the input."""

from collections.abc import Sequence

USER = "User"
ASSISTANT = "Assistant"


def transcript(turns: Sequence[str], last_speaker: str = USER) -> str:
    """Turns one per line as `User: ...` / `Assistant: ...`, speakers alternating back from `last_speaker`."""
    other = ASSISTANT if last_speaker == USER else USER
    lines = []
    for back, turn in enumerate(reversed(turns)):
        speaker = last_speaker if back % 2 == 0 else other
        lines.append(f"{speaker}: {turn.strip()}")
    return "\n".join(reversed(lines))


def last_exchange(turns: Sequence[str]) -> tuple[str, str, str] | None:
    """(instruction, input, output) from turns that alternate user/assistant and start with the user.

    The last user turn is the instruction, the assistant's reply the output, and what came before is the input
    as a transcript. A conversation that does not end with an assistant reply loses its trailing user turn;
    one without any reply gives None.
    """
    turns = list(turns)
    if len(turns) % 2 == 1:
        turns = turns[:-1]
    if len(turns) < 2:
        return None
    history = transcript(turns[:-2], last_speaker=ASSISTANT) if len(turns) > 2 else ""
    return turns[-2], history, turns[-1]
