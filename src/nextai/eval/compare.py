"""`nextai compare RUN_DIR...`: the report's Table 8 for several evaluated runs, with each run's mean win rate.

    nextai compare runs/v1 runs/v5 runs/base [--names V1 V5 base] [--format csv] [--output table.csv]
    nextai compare --config compare.yaml          # runs:, names:, format:, output: as keys

Columns are MMLU, BBQ and TruthfulQA exact match and CNN/DailyMail ROUGE-2, as in Table 8; the mean win rate is
HELM's over those columns (ties count half, a missing value is left out, not counted as a loss).
"""

import argparse
import csv
import io
import logging
from pathlib import Path

from nextai.atomic import write_text
from nextai.errors import NextaiError
from nextai.options import command_parser, option, parse_command_args
from nextai.eval.results import RESULTS_JSON, read_results
from nextai.eval.tasks import table_columns
from nextai.eval.winrate import mean_win_rates

log = logging.getLogger(__name__)

WIN_RATE_HEADER = "Mean win rate"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = command_parser("nextai compare", __doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories holding evaluation.json (from nextai evaluate)")
    option(parser, "names", nargs="+", help="row names, one per run (default: the directory names)")
    option(parser, "format", choices=("markdown", "csv"), default="markdown", help="what to print")
    option(parser, "output", help="also write the table to this file (.csv for CSV, else markdown)")
    args = parse_command_args(parser, argv)
    if not args.runs:
        raise NextaiError("nextai compare: give the run directories (or runs: in --config)")
    return args


def load_runs(runs: list[str], names: list[str] | None) -> list[tuple[str, dict]]:
    if names is not None and len(names) != len(runs):
        raise NextaiError(f"--names gives {len(names)} names for {len(runs)} runs")
    loaded = []
    for index, run in enumerate(runs):
        results = read_results(Path(run))
        if results is None:
            raise NextaiError(f"{run}: no {RESULTS_JSON} (run nextai evaluate on it first)")
        loaded.append((names[index] if names else Path(run).resolve().name, results))
    settings = {str(results["settings"]) for _, results in loaded}
    if len(settings) > 1:
        log.warning("the runs were evaluated with different settings (limit, seed or context window): "
                    "their numbers are not strictly comparable")
    for task in {name for _, results in loaded for name in results["tasks"]}:
        sources = {results["tasks"][task]["data"] for _, results in loaded if task in results["tasks"]}
        if len(sources) > 1:
            log.warning("%s was evaluated on different data (%s): not comparable", task, ", ".join(sorted(sources)))
    return loaded


def comparison_table(runs: list[tuple[str, dict]]) -> tuple[list[str], list[list]]:
    """(header, rows): one row per run with its Table 8 values (None where not evaluated) and mean win rate."""
    columns = table_columns()
    values = [[results["tasks"].get(task, {}).get("metrics", {}).get(column.metric) for task, column in columns]
              for _, results in runs]
    rates = mean_win_rates(values, [column.lower_is_better for _, column in columns])
    header = ["Model", *(column.label for _, column in columns), WIN_RATE_HEADER]
    rows = [[name, *row, rate] for (name, _), row, rate in zip(runs, values, rates)]
    return header, rows


def cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def to_markdown(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue()


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    header, rows = comparison_table(load_runs(args.runs, args.names))
    print(to_csv(header, rows) if args.format == "csv" else to_markdown(header, rows), end="")
    if args.output:
        text = to_csv(header, rows) if args.output.endswith(".csv") else to_markdown(header, rows)
        write_text(args.output, text)
