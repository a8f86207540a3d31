"""Token-length distributions for benchmarks: the named `v5-like` one, a fixed shape, or a prepared dataset's.

`v5-like` follows ../shared/reference/v5-lengths.md exactly (so numbers stay comparable across tools): per source,
`numpy.random.default_rng(0).lognormal(log(median), sigma, count)` in the order listed, rounded, clipped to
[16, 1024], concatenated: 49,700 examples, 18.76 M tokens.
"""

import math

import numpy as np

from nextai.errors import NextaiError

V5_LIKE = [  # source, count, median tokens, sigma (the report's Table 1 counts)
    ("dolly", 15000, 170, 0.8), ("prm800k", 13000, 330, 0.5), ("reclor", 4500, 330, 0.3),
    ("faithdial", 4500, 230, 0.35), ("multi_news", 4000, 2600, 0.5), ("codegen", 4000, 380, 0.6),
    ("scienceqa", 1300, 150, 0.4), ("lima", 1000, 650, 0.7), ("guanaco", 800, 400, 0.8), ("arb", 700, 450, 0.6),
    ("theoremqa", 500, 230, 0.5), ("leetcode", 400, 600, 0.4),
]


def v5_like() -> list[int]:
    rng = np.random.default_rng(0)
    parts = [np.clip(np.round(rng.lognormal(math.log(median), sigma, count)), 16, 1024)
             for _, count, median, sigma in V5_LIKE]
    return [int(x) for x in np.concatenate(parts)]


def lengths_from_spec(spec: str) -> list[int]:
    """`v5-like`, `fixed:LENGTHxCOUNT` (e.g. `fixed:1024x400`), or `prepared:PATH` (a tokenized dataset directory
    written by `nextai prepare` / the data module, whose `length` column is read)."""
    if spec == "v5-like":
        return v5_like()
    if spec.startswith("fixed:"):
        try:
            length, count = (int(x) for x in spec.removeprefix("fixed:").lower().split("x"))
        except ValueError:
            raise NextaiError(f"--lengths {spec}: expected fixed:LENGTHxCOUNT, e.g. fixed:1024x400") from None
        if length < 1 or count < 1:
            raise NextaiError(f"--lengths {spec}: LENGTH and COUNT must be at least 1, e.g. fixed:1024x400")
        return [length] * count
    if spec.startswith("prepared:"):
        import datasets

        path = spec.removeprefix("prepared:")
        try:
            return list(datasets.load_from_disk(path)["length"])
        except (FileNotFoundError, KeyError) as err:
            raise NextaiError(f"--lengths {spec}: no tokenized dataset with a length column at {path} ({err})") from None
    raise NextaiError(f"--lengths {spec}: expected v5-like, fixed:LENGTHxCOUNT or prepared:PATH")
