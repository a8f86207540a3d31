"""Write files and directories so that a reader sees the old version or the new one, never half of one."""

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success, flush it and rename it over `target`.

    Works for a file or a directory written at the yielded path. On error the temporary is removed and
    `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    work = tmp / target.name
    try:
        yield work
        if work.is_dir():
            for root, _, files in os.walk(work):
                for name in files:
                    _fsync_file(Path(root) / name)
        elif work.exists():
            _fsync_file(work)
        else:
            raise FileNotFoundError(f"nothing was written at {work}")
        if target.is_dir() and not target.is_symlink():
            # A directory cannot be renamed over a non-empty one: move the old aside first.
            old = tmp / (target.name + ".old")
            os.replace(target, old)
            os.replace(work, target)
        else:
            os.replace(work, target)
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (made with its folder if missing): one process at a time builds a
    cached artefact (the tiny model, a GGUF base's copy) while the others wait and then reuse it."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
