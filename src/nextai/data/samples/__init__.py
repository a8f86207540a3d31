"""Small sample files written for nextai (no copied dataset text): the tiny default's data and test fixtures."""

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent
BUNDLED_PREFIX = "bundled:"


def bundled_path(location: str) -> Path:
    """`bundled:NAME` -> the sample file NAME shipped inside the package."""
    return SAMPLES_DIR / location.removeprefix(BUNDLED_PREFIX)
