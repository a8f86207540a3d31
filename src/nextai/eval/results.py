"""The evaluation results files of a run (`evaluation.json`, `evaluation.md`): their names and how to read them back,
without importing torch (`nextai compare` reads them and starts at once)."""

import json
from pathlib import Path

from nextai.errors import NextaiError

RESULTS_JSON = "evaluation.json"
RESULTS_MARKDOWN = "evaluation.md"
RESULTS_FORMAT = 1


def read_results(run_directory: Path) -> dict | None:
    path = Path(run_directory) / RESULTS_JSON
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise NextaiError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT or "tasks" not in results:
        raise NextaiError(f"{path}: not a nextai evaluation results file (format {RESULTS_FORMAT})")
    return results
