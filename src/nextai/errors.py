"""The one error type users see: a problem with their input or machine, printed as one line."""


class NextaiError(Exception):
    """Bad input or an impossible setting. The CLI prints the message alone (no traceback) and exits 2.

    Messages name the culprit (file and line, key, value) and say what was expected.
    """


def first_line(err: BaseException) -> str:
    """The first non-blank line of `err`'s message, for a one-line NextaiError; its type name when it has none."""
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__
