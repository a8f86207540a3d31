"""`nextai evaluate`: the challenge's four task families on one model, results into the run directory.

Per HELM run: choose the test instances and in-context examples (fixed seed), build and fit each prompt, generate
with the task's decoding settings, score, aggregate. Results go to `evaluation.json` (metrics, settings, every
prediction with its scores, one example prompt per run) and `evaluation.md`, both written atomically; tasks
evaluated earlier with the same model and settings are kept, so tasks can be run one at a time.

HELM writes whole prompts (instructions, in-context examples, the question) and the challenge's server passed them
to the model as they were: `prompt_format raw`. A run trained on a chat template would then be asked outside the
format it learned, so `auto` (the default) sends such a run each prompt as the user's turn of its template
(`trained`), and every other run the raw prompt; either way a reply also ends at the template's end-of-turn token.
"""

import functools
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from nextai.atomic import write_json, write_text
from nextai.errors import NextaiError
from nextai.eval.generate import CHALLENGE_TOP_K, Decoding, count_tokens, first_tokens_text, generate
from nextai.eval.prompting import InferencePrompt
from nextai.eval.results import RESULTS_FORMAT, RESULTS_JSON, RESULTS_MARKDOWN, read_results
from nextai.eval.instances import sample_in_context_examples, select_eval_instances, split_instances
from nextai.eval.prompts import build_prompt
from nextai.eval.sources import task_location
from nextai.eval.tasks import TASK_NAMES, Scenario, Task, build_task

log = logging.getLogger(__name__)

PROMPT_FORMATS = ("auto", "raw", "trained")


@dataclass(frozen=True)
class EvaluationSettings:
    """What decides which prompts a run sees; results are comparable only between equal settings."""

    limit: int | None = 50  # test instances per HELM run (the report used 50)
    seed: int = 0  # instance choice, in-context examples and sampling (0 reproduces HELM's choices)
    context_window: int = 2048  # HELM's window for the challenge's model (prompt + max_tokens must fit)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise NextaiError(f"limit must be at least 1 (or null for every instance), got {self.limit}")
        if self.context_window < 2:
            raise NextaiError(f"context_window must be at least 2 tokens, got {self.context_window}")


def decoding_for(scenario: Scenario, seed: int, stop_token_ids: tuple[int, ...] = ()) -> Decoding:
    """The request HELM sends for this run, as a challenge server answers it (top-k 200, its default)."""
    fmt = scenario.format
    return Decoding(max_new_tokens=fmt.max_tokens, temperature=fmt.temperature, top_k=CHALLENGE_TOP_K,
                    stop=fmt.stop_sequences, stop_token_ids=stop_token_ids, top_logprobs=0, seed=seed)


def uses_template(prompt_format: str, prompt: InferencePrompt | None) -> bool:
    """Whether HELM's prompts go to the model inside the run's prompt format (see the module docstring)."""
    if prompt_format not in PROMPT_FORMATS:
        raise NextaiError(f"evaluate: --prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got "
                          f"{prompt_format!r}")
    if prompt is None or prompt_format == "raw":
        return False
    return prompt_format == "trained" or prompt.format.chat


def chosen_instances(scenario: Scenario, settings: EvaluationSettings) -> list:
    """The test instances a HELM run evaluates."""
    _, evaluated = split_instances(scenario.instances)
    if not evaluated:
        raise NextaiError(f"{scenario.name}: the data has no validation or test instances")
    return select_eval_instances(evaluated, settings.limit, settings.seed)


def run_scenario(task: Task, scenario: Scenario, model, tokenizer, settings: EvaluationSettings,
                 batch_size: int, prompt: InferencePrompt | None = None, templated: bool = False,
                 on_batch: Callable[[int], None] | None = None) -> dict:
    """One HELM run: its prompts generated, scored and aggregated; `on_batch(count)` after each generated batch."""
    train, _ = split_instances(scenario.instances)
    chosen = chosen_instances(scenario, settings)
    examples = sample_in_context_examples(train, scenario.format.max_train_instances, settings.seed)
    count = (lambda text: len(prompt.text_ids(text))) if templated else (lambda text: count_tokens(tokenizer, text))
    prompts = [build_prompt(scenario.format, examples, instance, count,
                            lambda text, n: first_tokens_text(tokenizer, text, n), settings.context_window)
               for instance in chosen]
    started = time.perf_counter()
    inputs = [prompt.text_ids(p.text) for p in prompts] if templated else [p.text for p in prompts]
    stop_ids = prompt.stop_token_ids() if prompt is not None else ()
    completions = generate(model, tokenizer, inputs, decoding_for(scenario, settings.seed, stop_ids), batch_size,
                           on_batch=on_batch)
    texts = [c.text for c in completions]
    scores = [task.score(instance, text, scenario.format) for instance, text in zip(chosen, texts)]
    metrics = task.aggregate(chosen, texts, scores)
    seconds = time.perf_counter() - started
    log.info("%s: %d instances, %s (%.1f s)", scenario.name, len(chosen),
             ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if v is not None), seconds)
    return {
        "metrics": metrics,
        "instances": len(chosen),
        "in_context_examples": len(examples),
        "prompts_with_fewer_examples": sum(p.shots < len(examples) for p in prompts),
        "prompts_truncated": sum(p.truncated for p in prompts),
        "seconds": round(seconds, 3),
        "example_prompt": prompts[0].text,
        "predictions": [{"id": instance.id, "completion": text, **score}
                        for instance, text, score in zip(chosen, texts, scores)],
    }


@dataclass(frozen=True)
class LoadedTask:
    task: Task
    location: str
    scenarios: list[Scenario]


def load_tasks(tasks: Sequence[str], eval_data: str, task_data: dict[str, str] | None,
               mmlu_subjects: list[str] | None) -> list[LoadedTask]:
    """Read every task's data (see `task_location`) before any model is loaded, so bad data fails fast."""
    built = [build_task(name, mmlu_subjects) for name in tasks]
    unknown = sorted(set(task_data or {}) - set(TASK_NAMES))
    if unknown:
        raise NextaiError(f"task_data: unknown task '{unknown[0]}'; expected one of {', '.join(TASK_NAMES)}")
    loaded = []
    for task in built:
        location = task_location(task.name, task.default_data, eval_data, task_data)
        loaded.append(LoadedTask(task, location, task.scenarios(location)))
    return loaded


@contextmanager
def task_progress(enabled: bool = True):
    """A rich Progress on standard error for one bar per task, nextai's log lines printed above it while it shows;
    silent (disabled) when `enabled` is false or standard error is not a terminal."""
    from rich.console import Console
    from rich.logging import RichHandler
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    console = Console(stderr=True)
    progress = Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("examples"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                        disable=not (enabled and console.is_terminal))
    # The log handler draws on its own console: while the bars show, it prints through theirs, above them.
    handlers = [] if progress.disable else [h for h in logging.getLogger("nextai").handlers
                                            if isinstance(h, RichHandler)]
    consoles = [h.console for h in handlers]
    with progress:
        for handler in handlers:
            handler.console = console
        try:
            yield progress
        finally:
            for handler, previous in zip(handlers, consoles):
                handler.console = previous


def evaluate(model, tokenizer, tasks: Sequence[LoadedTask], settings: EvaluationSettings,
             batch_size: int, prompt: InferencePrompt | None = None, templated: bool = False,
             show_progress: bool = True) -> dict[str, dict]:
    """Results of each task: its metrics (HELM's mean over its runs) and each run's metrics and predictions. With
    `show_progress`, a bar per task on a terminal's standard error counts the examples generated."""
    evaluated = {}
    with task_progress(show_progress) as progress:
        bars = {loaded.task.name: progress.add_task(
                    loaded.task.title, total=sum(len(chosen_instances(s, settings)) for s in loaded.scenarios),
                    start=False)  # every task's bar shows from the start; its clock starts with the task
                for loaded in tasks}
        for loaded in tasks:
            progress.start_task(bars[loaded.task.name])
            advance = functools.partial(progress.advance, bars[loaded.task.name])
            scenarios = {scenario.name: run_scenario(loaded.task, scenario, model, tokenizer, settings, batch_size,
                                                     prompt, templated, on_batch=advance)
                         for scenario in loaded.scenarios}
            evaluated[loaded.task.name] = {
                "title": loaded.task.title, "data": loaded.location,
                "metrics": loaded.task.combine({name: result["metrics"] for name, result in scenarios.items()}),
                "scenarios": scenarios}
    return evaluated


def merge_results(previous: dict | None, model: dict, settings: EvaluationSettings, tasks: dict) -> dict:
    """New results, keeping earlier tasks' when they came from the same model with the same settings."""
    kept = {}
    if previous is not None:
        if previous.get("model") == model and previous.get("settings") == asdict(settings):
            kept = {name: result for name, result in previous["tasks"].items() if name not in tasks}
        else:
            log.info("earlier results in the run directory came from another model or settings: replaced")
    ordered = {name: ({**kept, **tasks})[name] for name in TASK_NAMES if name in {**kept, **tasks}}
    return {"format": RESULTS_FORMAT, "model": model, "settings": asdict(settings), "tasks": ordered}


def format_value(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def results_markdown(results: dict, name: str) -> str:
    from nextai.eval.tasks import table_columns

    model = results["model"]
    settings = results["settings"]
    weights = model.get("adapter") or model.get("checkpoint") or "no adapter"
    summary = (f"Model: `{model['base_model']}` + `{weights}` ({model.get('quantization')}, {model.get('device')}). "
               f"Up to {settings['limit']} instances per HELM run, seed {settings['seed']}, "
               f"context window {settings['context_window']} tokens.")
    lines = [f"# Evaluation: {name}", "", summary, ""]
    columns = [(task, column) for task, column in table_columns() if task in results["tasks"]]
    lines += ["| " + " | ".join(column.label for _, column in columns) + " |",
              "|" + "---|" * len(columns),
              "| " + " | ".join(format_value(results["tasks"][task]["metrics"].get(column.metric))
                                for task, column in columns) + " |", ""]
    for task in results["tasks"].values():
        metric_names = list(task["metrics"])
        lines += [f"## {task['title']}", "", f"Data: `{task['data']}`", "",
                  "| Run | Instances | Examples | " + " | ".join(metric_names) + " |",
                  "|---|---|---|" + "---|" * len(metric_names)]
        for scenario, result in task["scenarios"].items():
            lines.append(f"| {scenario} | {result['instances']} | {result['in_context_examples']} | "
                         + " | ".join(format_value(result["metrics"].get(m)) for m in metric_names) + " |")
        if len(task["scenarios"]) > 1:
            lines.append("| **mean** | | | " + " | ".join(format_value(task["metrics"][m]) for m in metric_names)
                         + " |")
        lines.append("")
    return "\n".join(lines)


def write_results(run_directory: Path, results: dict) -> tuple[Path, Path]:
    run_directory = Path(run_directory)
    json_path, markdown_path = run_directory / RESULTS_JSON, run_directory / RESULTS_MARKDOWN
    write_json(json_path, results)
    write_text(markdown_path, results_markdown(results, run_directory.name))
    return json_path, markdown_path


def evaluate_run(trainer, module, adapter: str | None, ckpt_path: str | None, tasks: Sequence[str],
                 settings: EvaluationSettings, eval_data: str, task_data: dict[str, str] | None,
                 mmlu_subjects: list[str] | None, batch_size: int, prompt_format: str = "auto") -> dict:
    """`NextaiTrainer.evaluate`: load the run's model on the trainer's device, evaluate, write the results."""
    from nextai.eval.model import choose_weights, load_model

    uses_template(prompt_format, None)  # a bad value fails before anything loads
    run_directory = Path(trainer.default_root_dir)
    adapter, ckpt_path = choose_weights(adapter, ckpt_path, run_directory)
    loaded_tasks = load_tasks(tasks, eval_data, task_data, mmlu_subjects)
    loaded = load_model(module, trainer.strategy.root_device, adapter, ckpt_path, run_directory)
    templated = uses_template(prompt_format, loaded.prompt)
    log.info("evaluation prompts: %s", f"in the run's format, {loaded.prompt.describe()}" if templated
             else "HELM's, as they are")
    # The trainer has no progress bar callback under `--trainer.enable_progress_bar false`: no bars then either.
    evaluated = evaluate(loaded.model, loaded.tokenizer, loaded_tasks, settings, batch_size, loaded.prompt, templated,
                         show_progress=trainer.progress_bar_callback is not None)
    description = {**loaded.description, "prompts": loaded.prompt.format.describe() if templated else "raw"}
    results = merge_results(read_results(run_directory), description, settings, evaluated)
    json_path, markdown_path = write_results(run_directory, results)
    log.info("evaluation written to %s and %s", json_path, markdown_path)
    print(results_markdown(results, run_directory.name))
    return results
