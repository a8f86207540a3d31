"""Names a package exports but imports on first use (PEP 562), so a light submodule loads without the heavy ones."""

import importlib
from collections.abc import Callable


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], object]:
    """The `__getattr__` of `package` for `names` (exported name -> module that defines it)."""

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
