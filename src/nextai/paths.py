"""Where nextai keeps what it builds once and reuses (the tiny model, tokenized data)."""

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """`$NEXTAI_CACHE_DIR`, else `$XDG_CACHE_HOME/nextai`, else `~/.cache/nextai`."""
    if explicit := os.environ.get("NEXTAI_CACHE_DIR"):
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nextai"
