"""A model card that says what happened: the README.md of an adapter, merged or GGUF export in the Hub's card format
(`huggingface_hub.ModelCard`: YAML metadata, then markdown), read from what the run left in its directory.

It names the base, the data (what was mixed, its fingerprint), the recipe, how the run ended, the time it used of
its budget, its measured tokens/s and peak memory, its validation loss and the evaluation table when `nextai
evaluate` wrote one, and how to use the export. Every number comes from a file of the run; what is missing is left
out, never guessed.
"""

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from nextai.data.prompt import PromptFormat
from nextai.rundir import CHECKPOINT_DIR, METRICS_FILE, PEAK_MEMORY_FILE, RUN_FILE
from nextai.units import format_duration, parse_duration

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
CARD_MARKER = "<!-- written by nextai -->"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
EXPORT_LIBRARIES = {"adapter": "peft", "merged": "transformers", "gguf": "gguf"}


@dataclass
class RunFacts:
    """What a run directory says about the run (each field None when the run left no record of it)."""

    name: str
    config: dict = field(default_factory=dict)
    state: str | None = None
    step: int | None = None
    stop_reason: str | None = None
    elapsed_s: float | None = None
    budget_s: float | None = None
    tokens_per_s: float | None = None
    val_loss: float | None = None
    train_loss: float | None = None
    peak_memory: str | None = None
    evaluation_table: str | None = None
    prompt_format: PromptFormat | None = None


def read_run(run_directory: str | Path) -> RunFacts:
    run_directory = Path(run_directory)
    facts = RunFacts(name=run_directory.resolve().name)
    facts.config = _yaml(run_directory / "config.yaml")
    record = _json(run_directory / RUN_FILE)
    facts.state, facts.step, facts.stop_reason = record.get("state"), record.get("step"), record.get("reason")
    budget = facts.config.get("budget") or {}
    try:
        facts.budget_s = parse_duration(str(budget["limit"]), "budget.limit") if budget.get("limit") else None
    except Exception:  # noqa: BLE001 - a card never fails on an odd config value
        facts.budget_s = None
    facts.elapsed_s = _elapsed(run_directory, record)
    rows = _metrics(run_directory / METRICS_FILE)
    speeds = [r["train/tokens_per_sec"] for r in rows if r.get("train/tokens_per_sec") is not None]
    facts.tokens_per_s = sum(speeds) / len(speeds) if speeds else None
    facts.val_loss = next((r["val_loss"] for r in reversed(rows) if r.get("val_loss") is not None), None)
    facts.train_loss = next((r["train_loss"] for r in reversed(rows) if r.get("train_loss") is not None), None)
    facts.peak_memory = _peak_memory(_json(run_directory / PEAK_MEMORY_FILE))
    facts.evaluation_table = _evaluation_table(run_directory)
    facts.prompt_format = PromptFormat.load(run_directory)
    return facts


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value) if value not in ("", None) else None
                except ValueError:
                    parsed[key] = None
            rows.append(parsed)
    return rows


def _elapsed(run_directory: Path, record: dict) -> float | None:
    """The budget clock at the newest checkpoint (it counts the whole job, across resumes), else the time between
    the run's start and its last record."""
    import time

    checkpoint = record.get("checkpoint")
    candidates = [Path(checkpoint)] if checkpoint else sorted((run_directory / CHECKPOINT_DIR).glob("last*.ckpt"))
    for path in candidates:
        if path.is_file():
            try:
                import torch

                saved = torch.load(str(path), map_location="cpu", weights_only=False, mmap=True)
                for key, state in (saved.get("callbacks") or {}).items():
                    if "WallClockBudget" in str(key) and "elapsed_s" in state:
                        return float(state["elapsed_s"])
            except Exception:  # noqa: BLE001 - an unreadable checkpoint: fall back to run.json
                pass
    try:
        start = time.mktime(time.strptime(record["started"], "%Y-%m-%dT%H:%M:%S"))
        end = time.mktime(time.strptime(record["updated"], "%Y-%m-%dT%H:%M:%S"))
        return end - start
    except (KeyError, ValueError, TypeError):
        return None


def _peak_memory(report: dict) -> str | None:
    peaks = report.get("run_peak") or {}
    if not peaks:
        return None
    shown = ", ".join(f"{key.replace('_gib', '')} {value:.2f} GiB" for key, value in sorted(peaks.items()))
    return f"{shown} ({report.get('device_name') or report.get('device')}; {report.get('measure', '')})"


def _evaluation_table(run_directory: Path) -> str | None:
    """The headline table of `nextai evaluate`'s evaluation.md (Table 8's columns), if it ran."""
    path = run_directory / "evaluation.md"
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    table = []
    for line in lines:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    return "\n".join(table) or None


def _cell(text: object) -> str:
    """Text for a markdown table cell (`<|im_end|>` would end the cell)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def hub_id(name: str | None) -> str | None:
    """`name` when it reads as a hub model id and names no local path (the card's `base_model` must be one)."""
    if not name or Path(name).expanduser().exists() or not HUB_ID.match(name):
        return None
    return name


def _recipe(config: dict) -> list[tuple[str, str]]:
    model, data, trainer = config.get("model") or {}, config.get("data") or {}, config.get("trainer") or {}
    quantization = model.get("quantization") or {}
    rows = []
    if quantization:
        bits = "4-bit" if quantization.get("load_in_4bit") else "8-bit" if quantization.get("load_in_8bit") else None
        if bits:
            rows.append(("quantization", f"{bits} {quantization.get('bnb_4bit_quant_type', '')}"
                                         f"{', double quant' if quantization.get('bnb_4bit_use_double_quant') else ''}"
                                         f", compute {quantization.get('bnb_4bit_compute_dtype', '')}"))
    if model.get("lora_r") is not None:
        rows.append(("LoRA", f"r {model.get('lora_r')}, alpha {model.get('lora_alpha')}, dropout "
                             f"{model.get('lora_dropout')}, targets {model.get('lora_targets')}"))
    for key in ("optimizer", "learning_rate", "lr_scheduler", "warmup_steps", "weight_decay"):
        if model.get(key) is not None:
            rows.append((key, str(model[key])))
    for key in ("batch_size", "micro_batch_size", "cutoff_len", "train_on_inputs", "packing"):
        if data.get(key) is not None:
            rows.append((f"data.{key}", str(data[key])))
    for key in ("max_steps", "max_epochs", "precision"):
        if trainer.get(key) not in (None, -1):
            rows.append((f"trainer.{key}", str(trainer[key])))
    if config.get("seed_everything") is not None:
        rows.append(("seed", str(config["seed_everything"])))
    return rows


def _data(config: dict, data_description: dict | None) -> list[str]:
    lines = []
    if data_description:
        lines.append(f"- source: {data_description.get('source')}")
        for key in ("records_fingerprint", "tokenized_fingerprint"):
            if data_description.get(key):
                lines.append(f"- {key.replace('_', ' ')}: `{data_description[key]}`")
    else:
        source = (config.get("data") or {}).get("source")
        if source is not None:
            lines.append(f"- source: `{json.dumps(source, default=str)}`")
    return lines


def _usage(kind: str, repo: str, base: str | None) -> str:
    base_name = base or "BASE_MODEL"
    if kind == "adapter":
        block = ("```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
                 f"base = AutoModelForCausalLM.from_pretrained(\"{base_name}\")\n"
                 f"model = PeftModel.from_pretrained(base, \"{repo}\")\n```")
        note = ("Ask it in the format in `prompt_format.json` (the prompt it was trained with); nextai applies it: "
                "`nextai chat --config CONFIG --adapter ADAPTER_DIR`.")
    elif kind == "merged":
        block = ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                 f"model = AutoModelForCausalLM.from_pretrained(\"{repo}\")\n"
                 f"tokenizer = AutoTokenizer.from_pretrained(\"{repo}\")\n```")
        note = ("The tokenizer's chat template is the prompt it was trained with: "
                "`tokenizer.apply_chat_template(messages, add_generation_prompt=True)`. With nextai: "
                "`nextai chat --config CONFIG --model.base_model MERGED_DIR --adapter base`.")
    else:
        block = "```bash\nllama-cli -m MODEL.gguf -cnv\n```"
        note = ("The file's chat template is the prompt it was trained with (llama.cpp and Ollama apply it). With "
                "nextai: `nextai chat --config CONFIG --model.base_model MODEL.gguf --adapter base`.")
    return f"{block}\n\n{note}"


def build_card(kind: str, run_directory: str | Path, base_model: str, weights: str,
               data_description: dict | None = None, repo: str = ".", extra: dict | None = None):
    """The card of an export of `kind` (adapter, merged, gguf) made from `weights` (an adapter directory or a
    checkpoint) of the run in `run_directory`; `data_description` ({source, records_fingerprint,
    tokenized_fingerprint}) when the data module is at hand; `extra` adds rows to the export table (a GGUF's
    type, say)."""
    from huggingface_hub import ModelCard, ModelCardData

    facts = read_run(run_directory)
    base = hub_id(base_model)
    tags = ["nextai", "lora", "qlora", "text-generation"] + (["gguf"] if kind == "gguf" else [])
    data = ModelCardData(base_model=base, library_name=EXPORT_LIBRARIES[kind], tags=tags,
                         pipeline_tag="text-generation", model_name=facts.name)
    prompt_format = facts.prompt_format
    lines = [CARD_MARKER, "", f"# {facts.name}", "",
             f"A {'LoRA adapter' if kind == 'adapter' else 'merged model' if kind == 'merged' else 'GGUF file'} "
             f"fine-tuned with nextai (4-bit QLoRA on one GPU inside a wall-clock budget) "
             f"from `{base_model}`{'' if base else ' (a local model)'}.", ""]
    lines += ["## Export", "", "| | |", "|---|---|", f"| format | {kind} |", f"| made from | `{weights}` |"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in (extra or {}).items()]
    if prompt_format is not None:
        lines.append(f"| prompt format | {_cell(prompt_format.describe())} |")
    lines += ["", "## Data", ""] + (_data(facts.config, data_description) or ["- not recorded"]) + [""]
    recipe = _recipe(facts.config)
    if recipe:
        lines += ["## Recipe", "", "| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in recipe] + [""]
    run_rows = []
    if facts.state:
        run_rows.append(("state", facts.state + (f" ({facts.stop_reason})" if facts.stop_reason else "")))
    if facts.step is not None:
        run_rows.append(("optimizer steps", str(facts.step)))
    if facts.elapsed_s is not None:
        used = format_duration(facts.elapsed_s)
        run_rows.append(("time used", f"{used} of a {format_duration(facts.budget_s)} budget "
                                      f"({facts.elapsed_s / facts.budget_s:.1%})" if facts.budget_s else used))
    if facts.tokens_per_s is not None:
        run_rows.append(("tokens/s (mean, real tokens)", f"{facts.tokens_per_s:,.1f}"))
    if facts.peak_memory:
        run_rows.append(("peak memory", facts.peak_memory))
    if facts.train_loss is not None:
        run_rows.append(("last training loss", f"{facts.train_loss:.4f}"))
    if facts.val_loss is not None:
        run_rows.append(("validation loss", f"{facts.val_loss:.4f}"))
    if run_rows:
        lines += ["## The run", "", "| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in run_rows] + [""]
    if facts.evaluation_table:
        lines += ["## Evaluation", "", "The challenge's tasks as HELM ran them (`nextai evaluate`; details in the "
                                       "run's evaluation.md).", "", facts.evaluation_table, ""]
    lines += ["## Use", "", _usage(kind, repo, base), ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def is_nextai_card(path: Path) -> bool:
    return path.is_file() and CARD_MARKER in path.read_text(encoding="utf-8", errors="replace")


def write_card(directory: str | Path, card) -> Path:
    """Write `card` as `directory`/README.md, atomically."""
    from nextai.atomic import write_text

    path = Path(directory) / CARD_FILE
    write_text(path, str(card))
    return path


def describe_data(datamodule) -> dict | None:
    """{source, records_fingerprint, tokenized_fingerprint} of the configured data module, or None (no data module,
    or data that cannot be read here: a card never fails on it)."""
    if datamodule is None or getattr(datamodule, "source", None) is None:
        return None
    described = {"source": datamodule.source.describe()}
    try:
        described["records_fingerprint"] = datamodule.source.fingerprint()
        described["tokenized_fingerprint"] = datamodule.cache_key()
    except Exception as err:  # noqa: BLE001 - hub data offline, a moved file: the card says less
        log.info("model card: data fingerprint not computed (%s)", err)
    return described
