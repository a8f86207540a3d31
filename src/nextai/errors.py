"""The one error type users see: a problem with their input or machine, printed as one line."""


class NextaiError(Exception):
    """Bad input or an impossible setting. The CLI prints the message alone (no traceback) and exits 2.

    Messages name the culprit (file and line, key, value) and say what was expected.
    """
