import pytest

from nextai.errors import NextaiError
from nextai.units import format_duration, parse_duration, parse_memory


@pytest.mark.parametrize("text, seconds", [
    ("24h", 86400), ("90m", 5400), ("1d2h", 93600), ("1h30m", 5400), ("45s", 45), ("1.5h", 5400),
    ("1d 2h", 93600), ("12:00:00", 43200), ("01:00:00:00", 86400), ("2H", 7200),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "0h", "1x", "1h1h", "24 hours", "1:2", "abc", "1e3h"])
def test_bad_durations_name_the_value(text):
    with pytest.raises(NextaiError, match="budget.limit: cannot read"):
        parse_duration(text, "budget.limit")


def test_format_duration():
    assert format_duration(5400) == "1h30m00s"
    assert format_duration(59.6) == "1m00s"
    assert format_duration(0.5) == "0.5s" and format_duration(-1) == "0.0s"


@pytest.mark.parametrize("text, size", [("38GiB", 38 * 2**30), ("40GB", 40 * 10**9), ("512 MiB", 512 * 2**20),
                                        ("1024", 1024), ("1.5gib", int(1.5 * 2**30))])
def test_memory(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "GiB", "38 parsecs", "-1GiB", "0GB"])
def test_bad_memory(text):
    with pytest.raises(NextaiError):
        parse_memory(text, "model.memory_budget")
