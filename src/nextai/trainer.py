"""`NextaiTrainer`: Lightning's Trainer plus the nextai subcommands that read the same config as `fit`.

LightningCLI turns each public method named in `NextaiCLI.subcommands()` into a subcommand with the method's own
arguments next to `--model.*`, `--data.*` and `--trainer.*`. Each method stays a few lines that hand the
configured objects to the package that does the work.
"""

from pathlib import Path

import lightning as L


class NextaiTrainer(L.Trainer):
    """The Trainer of `nextai`: `fit` and `validate` as in Lightning, plus nextai's own subcommands."""

    def prepare(self, model: L.LightningModule, datamodule: L.LightningDataModule,
                output_dir: str | None = None, show: int = 0) -> None:
        """Read, filter, mix, dedup and tokenize the data once (`fit` reuses it); write a manifest and histograms.

        Args:
            output_dir: where `manifest.json` and `histograms/` go (default: `<trainer.default_root_dir>/data`).
            show: print this many training examples as the model reads them, the trained tokens highlighted.
        """
        from nextai.data.prepare import PREPARED_DIR, prepare

        if show < 0:
            from nextai.errors import NextaiError

            raise NextaiError(f"--show must be 0 or more, got {show}")
        prepare(datamodule, Path(output_dir) if output_dir else Path(self.default_root_dir) / PREPARED_DIR,
                show=show)

    def evaluate(self, model: L.LightningModule, datamodule: L.LightningDataModule | None = None,
                 ckpt_path: str | None = None, adapter: str | None = None, tasks: list[str] | None = None,
                 limit: int | None = 50, seed: int = 0, eval_data: str = "hub", task_data: dict[str, str] | None = None,
                 mmlu_subjects: list[str] | None = None, context_window: int = 2048, batch_size: int = 8) -> dict:
        """Evaluate the base + LoRA weights on the challenge's tasks as HELM ran them.

        Writes `evaluation.json` and `evaluation.md` into the run directory.

        Args:
            ckpt_path: a nextai checkpoint whose LoRA weights to evaluate.
            adapter: a PEFT adapter directory instead, or `base` for the base model alone (default: the run's adapter).
            tasks: any of mmlu, bbq, truthfulqa, cnndm (default: all four).
            limit: test instances per HELM run (null: all).
            seed: instance choice, in-context examples and sampling; 0 picks what HELM picks.
            eval_data: `hub` (each task's hub dataset or original URL), `bundled` (small samples), or a directory
                holding mmlu/, bbq/, truthfulqa/, cnndm/ in each source's own layout.
            task_data: per-task locations overriding eval_data, e.g. {cnndm: /data/cnndm}.
            mmlu_subjects: MMLU subjects (default: the challenge's 17).
            context_window: tokens a prompt plus its answer may use (HELM used 2048 for the challenge).
            batch_size: prompts generated together.
        """
        from nextai.eval.evaluate import EvaluationSettings, evaluate_run
        from nextai.eval.tasks import TASK_NAMES

        return evaluate_run(self, model, adapter, ckpt_path, tasks or list(TASK_NAMES),
                            EvaluationSettings(limit, seed, context_window), eval_data, task_data, mmlu_subjects,
                            batch_size)

    def serve(self, model: L.LightningModule, datamodule: L.LightningDataModule | None = None,
              ckpt_path: str | None = None, adapter: str | None = None, host: str = "127.0.0.1", port: int = 8080,
              queue_size: int = 16, timeout: str = "10m", max_new_tokens: int = 1024,
              max_request_size: str = "1MiB") -> None:
        """Serve the base + LoRA weights through the challenge's HTTP API (/process, /tokenize, /decode).

        One request at a time on the trainer's device, until interrupted.

        Args:
            ckpt_path: a nextai checkpoint whose LoRA weights to serve.
            adapter: a PEFT adapter directory instead, or `base` for the base model alone (default: the run's adapter).
            host: address to listen on (loopback by default; 0.0.0.0 inside the challenge's container).
            port: port to listen on (HELM's default base URL is http://localhost:8080).
            queue_size: requests waiting or running at once; one more is answered 503.
            timeout: longest time from a request's arrival to its answer (e.g. 10m); later is answered 504.
            max_new_tokens: the most tokens one request may ask for.
            max_request_size: the largest request body (e.g. 1MiB); larger is answered 413.
        """
        from nextai.serve.app import ServeLimits, serve_run
        from nextai.units import parse_duration, parse_memory

        limits = ServeLimits(max_new_tokens=max_new_tokens, queue_size=queue_size,
                             timeout=parse_duration(timeout, "timeout"),
                             max_request_bytes=parse_memory(max_request_size, "max_request_size"))
        serve_run(self, model, adapter, ckpt_path, host, port, limits)

    def export(self, model: L.LightningModule, datamodule: L.LightningDataModule | None = None,
               ckpt_path: str | None = None, adapter: str | None = None, output_dir: str | None = None,
               base_weights: str = "original", device: str = "cpu") -> None:
        """Merge the LoRA weights into a bf16 copy of the base and write a plain transformers checkpoint.

        The merge is peft's `merge_and_unload`; the result loads without peft.

        Args:
            ckpt_path: a nextai checkpoint whose LoRA weights to merge.
            adapter: a PEFT adapter directory instead (default: the run's adapter).
            output_dir: where to write it (default: `<trainer.default_root_dir>/merged`).
            base_weights: `original` (the base's bf16 weights) or `dequantized` (the NF4 weights the adapter was
                trained against, in bf16).
            device: where to merge (a 70B model in bf16 needs about 140 GB: the CPU by default).
        """
        from nextai.eval.export import MERGED_DIR, export_merged

        run_directory = Path(self.default_root_dir)
        export_merged(model, adapter, ckpt_path, Path(output_dir) if output_dir else run_directory / MERGED_DIR,
                      run_directory, base_weights, device)

    def plan(self, model: L.LightningModule, datamodule: L.LightningDataModule, bench: str | None = None,
             run: str | None = None, lengths: str | None = None, devices: int = 1,
             ddp_efficiency: float = 0.9) -> str:
        """How long the configured data takes with measured step times, whether it fits `budget.limit` and
        `model.memory_budget`, and which measured recipe would.

        Args:
            bench: a `nextai bench` JSON table (e.g. benchmarks/results/bench-70b-v5.json): every recipe in it.
            run: a run directory whose metrics.csv (and peak_memory.json) hold measured speed (and memory).
            lengths: a named distribution instead of the configured data (`v5-like`, `fixed:LxN`, `prepared:PATH`).
            devices: GPUs to project for (DDP), from the 1-GPU measurements; not measured.
            ddp_efficiency: share of the ideal N-fold speed-up assumed to remain (default 0.9, an assumption).
        """
        from nextai.bench.plan import plan_command

        return plan_command(datamodule, bench, run, lengths, self.max_epochs if self.max_epochs > 0 else 1,
                            self.budget_limit_s(), model.hparams.get("memory_budget"), devices, ddp_efficiency)

    def budget_limit_s(self) -> float:
        """The configured `budget.limit` in seconds; without a budget callback, `WallClockBudget`'s default."""
        import inspect

        from nextai.callbacks.budget import WallClockBudget
        from nextai.units import parse_duration

        budget = next((c for c in self.callbacks if isinstance(c, WallClockBudget)), None)
        if budget is not None:
            return budget.limit_s
        return parse_duration(inspect.signature(WallClockBudget).parameters["limit"].default, "budget.limit")
