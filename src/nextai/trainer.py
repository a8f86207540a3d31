"""`NextaiTrainer`: Lightning's Trainer plus the nextai subcommands that read the same config as `fit`.

LightningCLI turns each public method named in `NextaiCLI.subcommands()` into a subcommand with the method's own
arguments next to `--model.*`, `--data.*` and `--trainer.*`. Each method stays a few lines that hand the
configured objects to the package that does the work.
"""

from pathlib import Path

import lightning as L

from nextai.bench.plan import DDP_EFFICIENCY


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
                 mmlu_subjects: list[str] | None = None, context_window: int = 2048, batch_size: int = 8,
                 prompt_format: str = "auto") -> dict:
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
            prompt_format: `raw` (HELM's prompts as the challenge's server got them), `trained` (each prompt as the
                user's turn in the run's prompt format), or `auto` (trained when the run trained on a chat template,
                raw otherwise: the challenge evaluated Alpaca-trained models on raw prompts).
        """
        from nextai.eval.evaluate import EvaluationSettings, evaluate_run
        from nextai.eval.tasks import TASK_NAMES

        return evaluate_run(self, model, adapter, ckpt_path, tasks or list(TASK_NAMES),
                            EvaluationSettings(limit, seed, context_window), eval_data, task_data, mmlu_subjects,
                            batch_size, prompt_format)

    def serve(self, model: L.LightningModule, datamodule: L.LightningDataModule | None = None,
              ckpt_path: str | None = None, adapter: str | None = None, host: str = "127.0.0.1", port: int = 8080,
              queue_size: int = 16, timeout: str = "10m", max_new_tokens: int = 1024,
              max_request_size: str = "1MiB", api_key: str | None = None, unauthenticated: bool = False,
              model_name: str | None = None) -> None:
        """Serve the base + LoRA weights: the challenge's HTTP API (/process, /tokenize, /decode) and OpenAI-compatible
        routes (/v1/chat/completions, /v1/completions, /v1/models), plus /health.

        One request at a time on the trainer's device, until interrupted. /process reads HELM's prompts as they are;
        the /v1 routes write prompts in the format the run trained with.

        Args:
            ckpt_path: a nextai checkpoint whose LoRA weights to serve.
            adapter: a PEFT adapter directory instead, or `base` for the base model alone (default: the run's adapter).
            host: address to listen on (loopback by default; 0.0.0.0 inside the challenge's container).
            port: port to listen on (HELM's default base URL is http://localhost:8080).
            queue_size: requests waiting or running at once; one more is answered 503.
            timeout: longest time from a request's arrival to its answer (e.g. 10m); later is answered 504.
            max_new_tokens: the most tokens one request may ask for.
            max_request_size: the largest request body (e.g. 1MiB); larger is answered 413.
            api_key: every route but /health then needs `Authorization: Bearer KEY` (default: NEXTAI_API_KEY).
                Listening beyond loopback needs one, or `unauthenticated`.
            unauthenticated: listen beyond loopback without a key (the challenge's container: HELM sends none).
            model_name: the model id /v1 routes answer to (default: the run directory's name).
        """
        from nextai.serve.app import serve_run
        from nextai.serve.worker import ServeLimits
        from nextai.units import parse_duration, parse_memory

        limits = ServeLimits(max_new_tokens=max_new_tokens, queue_size=queue_size,
                             timeout=parse_duration(timeout, "timeout"),
                             max_request_bytes=parse_memory(max_request_size, "max_request_size"))
        serve_run(self, model, adapter, ckpt_path, host, port, limits, api_key, unauthenticated, model_name)

    def chat(self, model: L.LightningModule, datamodule: L.LightningDataModule | None = None,
             ckpt_path: str | None = None, adapter: str | None = None, prompt: str | None = None,
             system: str | None = None, max_new_tokens: int = 512, temperature: float = 0.8, top_k: int | None = 50,
             top_p: float = 1.0, seed: int | None = None, stop: list[str] | None = None) -> None:
        """Talk to the base + LoRA weights in the terminal: replies streamed in the run's prompt format, the
        conversation kept; /reset, /system TEXT, /show, /exit.

        A merged export or a GGUF file is the base alone: `--model.base_model runs/x/merged --adapter base`.

        Args:
            ckpt_path: a nextai checkpoint whose LoRA weights to load.
            adapter: a PEFT adapter directory instead, or `base` for the base model alone (default: the run's adapter).
            prompt: answer this one message and exit (the reply alone on standard output).
            system: the system prompt to start with.
            max_new_tokens: the longest reply, in tokens.
            temperature: sampling temperature (0: greedy).
            top_k: sample among the k most likely tokens (0 or null: all).
            top_p: nucleus sampling.
            seed: sampling seed (default: a fresh one).
            stop: text that ends a reply besides the template's end of turn.
        """
        from nextai.chat import Sampling, chat_run

        sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                            seed=seed, stop=tuple(s for s in stop or () if s))
        chat_run(self, model, adapter, ckpt_path, sampling, system, prompt)

    def export(self, model: L.LightningModule, datamodule: L.LightningDataModule | None = None,
               ckpt_path: str | None = None, adapter: str | None = None, format: str = "merged",
               gguf_type: str = "q8_0", output_dir: str | None = None, base_weights: str = "original",
               device: str = "cpu") -> None:
        """Write the LoRA weights as a PEFT adapter, merged into a bf16 copy of the base, or as a GGUF file, with
        the run's prompt format and a model card.

        Args:
            ckpt_path: a nextai checkpoint whose LoRA weights to export (any checkpoint of the run).
            adapter: a PEFT adapter directory instead (default: the run's adapter).
            format: `adapter` (PEFT, no merge), `merged` (transformers checkpoint, bf16), or `gguf` (llama.cpp;
                LLaMA architecture).
            gguf_type: with format gguf: `f16`, `bf16` or `q8_0`.
            output_dir: where to write it (default: `<run>/merged`, `<run>/adapter-<checkpoint>` or
                `<run>/adapter-export`, `<run>/gguf-<type>`).
            base_weights: `original` (the base's bf16 weights) or `dequantized` (the NF4 weights the adapter was
                trained against, in bf16); merged and gguf only.
            device: where to merge (a 70B model in bf16 needs about 140 GB: the CPU by default).
        """
        from nextai.eval.export import export_run

        export_run(model, datamodule, adapter, ckpt_path, output_dir, Path(self.default_root_dir), format,
                   gguf_type, base_weights, device)

    def push(self, model: L.LightningModule, datamodule: L.LightningDataModule | None = None,
             repo_id: str = "", folder: str | None = None, private: bool = True, dry_run: bool = False) -> None:
        """Upload an export to a Hugging Face Hub model repo (huggingface_hub's token: HF_TOKEN or `hf auth
        login`); a folder without a card gets nextai's model card first.

        Args:
            repo_id: the hub repo, `user/name`.
            folder: what to upload: the run's adapter by default, or `merged`, `gguf-q8_0`, any directory.
            private: create the repo private (if it does not exist).
            dry_run: list the files that would go, upload nothing (works offline).
        """
        from nextai.errors import NextaiError
        from nextai.hub import push_run

        if not repo_id:
            raise NextaiError("push needs --repo_id user/name")
        print(push_run(model, datamodule, Path(self.default_root_dir), folder, repo_id, private, dry_run))

    def plan(self, model: L.LightningModule, datamodule: L.LightningDataModule, bench: str | None = None,
             run: str | None = None, lengths: str | None = None, devices: int = 1,
             ddp_efficiency: float = DDP_EFFICIENCY) -> str:
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
                            self.budget_limit_s(), model.settings.memory.memory_budget, devices, ddp_efficiency)

    def budget_limit_s(self) -> float:
        """The configured `budget.limit` in seconds; without a budget callback, the default budget."""
        from nextai.callbacks.budget import WallClockBudget
        from nextai.clock import DEFAULT_BUDGET
        from nextai.units import parse_duration

        budget = next((c for c in self.callbacks if isinstance(c, WallClockBudget)), None)
        if budget is not None:
            return budget.limit_s
        return parse_duration(DEFAULT_BUDGET, "budget.limit")
