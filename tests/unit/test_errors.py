"""`first_line`: the one-line reason every NextaiError built from another exception carries."""

import pytest

from nextai.errors import first_line


@pytest.mark.parametrize("err, expected", [
    (OSError("Can't load config for 'x'.\nMake sure that:\n- it exists"), "Can't load config for 'x'."),
    (ValueError("\n\n  indented reason  \nmore"), "indented reason"),
    (OSError(""), "OSError"),  # an empty message once raised IndexError instead of the one-line error
    (ValueError("   \n  "), "ValueError"),
    (KeyError("vocab"), "'vocab'"),
])
def test_first_line(err, expected):
    assert first_line(err) == expected
