"""`QLoRAModule`: a causal LM quantized to 4-bit with LoRA adapters, trained and validated by Lightning.

Thin by design: loading is `loading`, LoRA is `lora`, the optimizer is `optim`, activation memory is
`activations`/`memory_plan`, the loss is `loss`; this class wires them into Lightning's hooks and makes
checkpoints hold only what training changes (the LoRA weights).
"""

import logging
import shutil
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torchmetrics import MeanMetric

from nextai.atomic import atomic_path
from nextai.errors import NextaiError
from nextai.modules.activations import PinnedOffloader, apply_layer_policies, decoder_layers, describe_policies
from nextai.modules.attention import PACKED_KWARGS, AttentionChoice, choose_attention
from nextai.modules.kernels import apply_liger_kernels, check_layers_compiled, compile_decoder_layers
from nextai.modules.loading import load_causal_lm
from nextai.modules.compatibility import StrategyKind, resolve, strategy_kind
from nextai.modules.adapter_state import MODULE_PREFIX, check_lora_weights
from nextai.modules.lora import check_targets_exist, lora_config, lora_target_modules
from nextai.modules.loss import describe_linear_cross_entropy, linear_cross_entropy
from nextai.modules.memory_plan import budget_bytes, cap_allocator, measure_layer, plan_layers
from nextai.modules.nf4_dequant import DequantKernel, resolve_kernel
from nextai.modules.optim import STATE_BYTES_PER_PARAM, OptimizerName, build_optimizer, build_schedule
from nextai.modules.quantization import Quantization, keep_cpu_layout_trainable
from nextai.modules.settings import ModelSettings, default, flat_help, flat_names
from nextai.internals import attached_trainer, replay_epoch_start_draw, saved_batch_progress
from nextai.rundir import ADAPTER_DIR, PROMPT_FORMAT_FILE, run_dir
from nextai.units import gib

log = logging.getLogger(__name__)

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", *PACKED_KWARGS)


def rng_states() -> dict:
    """Every generator a training step draws from (dropout masks): Python, NumPy, torch CPU and CUDA."""
    import random

    import numpy as np

    # NumPy's state as plain values and a tensor, so the checkpoint still loads with torch.load(weights_only=True).
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss),
                   float(cached_gaussian))
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    import random

    import numpy as np

    random.setstate(states["python"])
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def count_parameters(model) -> tuple[int, int]:
    """(trainable, all) parameters, counting 4-bit packed weights at their real size (peft's own count)."""
    return model.get_nb_trainable_parameters()


class QLoRAModule(L.LightningModule):
    """Fine-tunes `base_model` (hub id, local path, GGUF file, or `tiny`) with LoRA on top of its quantized weights.

    Every argument is a setting of `nextai.modules.settings` under its flat name (`lora_r` is `LoRASettings.r`),
    described and defaulted there; `self.settings` holds them grouped. What the settings do with each strategy and
    device (refusals and automatic changes) is the table of `nextai.modules.compatibility`.
    """

    def __init__(
        self,
        base_model: str = default("base_model"),
        quantization: Quantization = Quantization(),
        attn_implementation: AttentionChoice = default("attn_implementation"),
        gradient_checkpointing: bool = default("gradient_checkpointing"),
        lora_r: int = default("lora_r"),
        lora_alpha: int = default("lora_alpha"),
        lora_dropout: float = default("lora_dropout"),
        lora_targets: str | list[str] = default("lora_targets"),
        optimizer: OptimizerName = default("optimizer"),
        learning_rate: float = default("learning_rate"),
        weight_decay: float = default("weight_decay"),
        lr_scheduler: str = default("lr_scheduler"),
        warmup_steps: int = default("warmup_steps"),
        cutoff_len: int = default("cutoff_len"),
        packing: bool = default("packing"),
        micro_batch_tokens: int | None = default("micro_batch_tokens"),
        kbit_preparation: bool = default("kbit_preparation"),
        fused_cross_entropy: bool = default("fused_cross_entropy"),
        liger_kernels: bool = default("liger_kernels"),
        compile_layers: bool = default("compile_layers"),
        offload_activations: bool = default("offload_activations"),
        memory_budget: str | None = default("memory_budget"),
        lora_dtype: Literal["float32", "bfloat16"] = default("lora_dtype"),
        lean_lora: bool = default("lean_lora"),
        dequant_kernel: DequantKernel = default("dequant_kernel"),
        base_matmul: Literal["bf16", "fp8"] = default("base_matmul"),
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        flat = {name: value for name, value in self.hparams.items() if name in flat_names()}
        self.settings = ModelSettings.from_flat(**flat)
        self.settings.check()
        resolve(self.settings)  # combinations that can never work fail here, before data or weights are touched
        self.quantization = quantization
        self.strict_loading = False  # checkpoints hold the trainable weights only; on_load_checkpoint checks them
        self.model = None
        self.run_settings: ModelSettings | None = None  # what runs, once built (the table applied)
        self._trainable: dict[str, torch.Size] = {}
        self.memory_plan = None
        self.val_loss = MeanMetric()
        self._offloader = PinnedOffloader()
        self._rng_to_restore: dict | None = None
        self._rng_at_epoch_start = False

    # ----------------------------------------------------------------------------------------- building
    def configure_model(self) -> None:
        if self.model is None:
            # Outside a Trainer (`QLoRAModule.load_from_checkpoint`) the model is built on the CPU.
            trainer = attached_trainer(self)
            if trainer is None:
                self.build_model("cpu")
            else:
                self.build_model(trainer.strategy.root_device, strategy_kind(trainer.strategy))

    def check_device(self, device: torch.device | str, strategy: StrategyKind = "single") -> ModelSettings:
        """The settings that will run on `device` under `strategy`: refusals raise here, before anything is loaded
        or written."""
        device = torch.device(device)
        settings = resolve(self.settings, strategy, device.type)
        choose_attention(settings.kernels.attn_implementation, device.type, packed=settings.packing)
        return settings

    def build_model(self, device: torch.device | str, strategy: StrategyKind = "single") -> None:
        """Load the quantized base on `device`, then build on it (see `build_on`)."""
        device = torch.device(device)
        settings = self.check_device(device, strategy)
        self.build_on(self.load_base(settings, device), device, strategy)

    def load_base(self, settings: ModelSettings, device: torch.device):
        return load_causal_lm(settings.base_model, self.quantization, settings.kernels.attn_implementation, device,
                              packed=settings.packing)

    def build_on(self, base, device: torch.device | str, strategy: StrategyKind = "single") -> None:
        """Turn a loaded base into the trained model, in named steps: prepare it, add LoRA, speed it up, plan its
        activations. Under FSDP (`strategy` fsdp) the strategy, not the model, recomputes the decoder layers."""
        device = torch.device(device)
        settings = self.run_settings = self.check_device(device, strategy)
        sharded = strategy == "fsdp"
        model = self._prepare(base, settings, device, sharded)
        model = self._add_lora(model, settings)
        self._speed_up(model, settings, device)
        model.train()  # from_pretrained returns eval mode, and transformers only checkpoints activations in train mode
        self.model = model
        self._plan_activations(settings, device, sharded)
        trainable, total = count_parameters(model)
        log.info("trainable parameters: %s of %s (%.4f %%), LoRA r=%d on %s", f"{trainable:,}", f"{total:,}",
                 100 * trainable / total, settings.lora.r, ", ".join(lora_target_modules(settings.lora.targets)))

    def _prepare(self, model, settings: ModelSettings, device: torch.device, sharded: bool):
        """Check the base fits the settings, swap in fused kernels that must precede peft, freeze it, and set up
        k-bit preparation and activation checkpointing."""
        keep_cpu_layout_trainable(model)
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and settings.cutoff_len > positions:
            raise NextaiError(f"data.cutoff_len {settings.cutoff_len} exceeds the {positions} positions of "
                              f"'{settings.base_model}'")
        check_targets_exist(model, lora_target_modules(settings.lora.targets))
        if settings.kernels.liger_kernels:  # on the transformers model, before peft wraps its projections
            log.info("kernels: %s", apply_liger_kernels(model, device.type))
        memory = settings.memory
        checkpointing = {"use_reentrant": False}
        if self.quantization.enabled and memory.kbit_preparation:
            from peft import prepare_model_for_kbit_training

            return prepare_model_for_kbit_training(model, use_gradient_checkpointing=memory.gradient_checkpointing,
                                                   gradient_checkpointing_kwargs=checkpointing)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        if memory.gradient_checkpointing and not sharded:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
        return model

    def _add_lora(self, model, settings: ModelSettings):
        from peft import get_peft_model

        lora = settings.lora
        model = get_peft_model(model, lora_config(lora.r, lora.alpha, lora.dropout, lora.targets))
        self._trainable = {f"{MODULE_PREFIX}{name}": p.shape for name, p in model.named_parameters() if p.requires_grad}
        if lora.dtype != "float32":
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.data = parameter.data.to(getattr(torch, lora.dtype))
        return model

    def _speed_up(self, model, settings: ModelSettings, device: torch.device) -> None:
        """The lean 4-bit LoRA layers and the dequantization kernel; the fused loss is logged."""
        if self.quantization.load_in_4bit:
            from nextai.modules.lean_lora import make_lean

            kernel = resolve_kernel(settings.kernels.dequant_kernel, device.type)
            log.info("4-bit layers: %s", make_lean(model, settings.lora.lean, kernel, settings.kernels.base_matmul))
        # Offloaded layers use torch's reentrant checkpoint, which only propagates gradients to inputs that
        # require them: make the embeddings' output require grad.
        model.enable_input_require_grads()
        if settings.memory.fused_cross_entropy:
            log.info("loss: %s", describe_linear_cross_entropy(device.type))

    def _plan_activations(self, settings: ModelSettings, device: torch.device, sharded: bool) -> None:
        """What each decoder layer keeps for the backward pass, then torch.compile on the layers."""
        if sharded:
            log.info("activations: %s by the FSDP strategy", "decoder layers recomputed"
                     if settings.memory.gradient_checkpointing else "all kept")
        else:
            self._choose_layer_policies(settings, device)
        if settings.kernels.compile_layers:
            # After the activation policies: the memory plan was measured on uncompiled layers.
            log.info("kernels: %s", compile_decoder_layers(decoder_layers(self.model)))
            if self.memory_plan is not None and "offload" in self.memory_plan.policies:
                log.warning("kernels: the memory plan offloads some layers; torch.compile does not trace the "
                            "offloading hooks, so those layers run uncompiled")

    def _choose_layer_policies(self, settings: ModelSettings, device: torch.device) -> None:
        memory = settings.memory
        layers = len(decoder_layers(self.model))
        if memory.memory_budget:
            tokens = settings.micro_batch_tokens or settings.cutoff_len
            cost = measure_layer(self.model, tokens, packed=settings.packing)
            torch.cuda.reset_peak_memory_stats(device)  # the probe's transient is not the training step's
            plan = plan_layers(layers, budget_bytes(memory.memory_budget, device),
                               self._static_bytes(settings, device, tokens), cost)
            self.memory_plan = plan
            policies = plan.policies
            log.info("memory plan for %d tokens a micro batch: %s", tokens, plan.summary())
            if memory.memory_budget != "card":
                fraction = cap_allocator(plan.budget_bytes, device)
                log.info("memory cap: torch's allocator may reserve %.1f GiB (%.1f %% of the card)",
                         gib(plan.budget_bytes), 100 * fraction)
        elif memory.gradient_checkpointing:
            policies = ["offload" if memory.offload_activations else "recompute"] * layers
        else:
            policies = ["keep"] * layers
        apply_layer_policies(self.model, policies, self._offloader)
        log.info("activations: %s", describe_policies(policies))

    def _static_bytes(self, settings: ModelSettings, device: torch.device, tokens: int) -> int:
        """What a step holds besides the decoder layers' activations: weights now allocated, LoRA gradients and
        optimizer state, the loss over `tokens`, the embeddings' and final norm's activations and gradients, and
        128 MiB of allocator and library workspace."""
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        config = self.model.get_base_model().config
        if settings.memory.fused_cross_entropy:  # one chunk of fp32 logits and its gradient
            loss = min(tokens, 1024) * config.vocab_size * (4 + 4)
        else:  # bf16 logits, their fp32 upcast and its gradient
            loss = tokens * config.vocab_size * (2 + 4 + 4)
        width = 4 if settings.memory.kbit_preparation else 2  # the residual stream's dtype
        boundary = 2 * tokens * config.hidden_size * width  # embeddings output and final hidden states, with grads
        optimizer = trainable * (4 + STATE_BYTES_PER_PARAM[settings.optimizer.name])
        return torch.cuda.memory_allocated(device) + optimizer + loss + 2 * boundary + (128 << 20)

    # ------------------------------------------------------------------------------------------- steps
    def forward(self, batch: dict):
        """The model's output for a batch; with `fused_cross_entropy` only the loss (no logits)."""
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        if not self.settings.memory.fused_cross_entropy:
            return self.model(**inputs, labels=batch["labels"], use_cache=False)
        base = self.model.get_base_model()
        hidden = base.get_decoder()(**inputs, use_cache=False).last_hidden_state
        loss = linear_cross_entropy(hidden, base.get_output_embeddings().weight, batch["labels"])
        from transformers.modeling_outputs import CausalLMOutputWithPast

        return CausalLMOutputWithPast(loss=loss)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self(batch).loss
        if self.settings.kernels.compile_layers and self.global_step == 0 and batch_idx == 0:
            check_layers_compiled()
        self.log("train_loss", loss, on_step=True, prog_bar=True, batch_size=batch["input_ids"].size(0))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = self(batch).loss
        predicted = (batch["labels"][:, 1:] != -100).sum()
        self.val_loss.update(loss, weight=predicted)  # token-weighted mean over the whole split
        self.log("val_loss", self.val_loss, on_epoch=True, prog_bar=True, batch_size=batch["input_ids"].size(0))

    def configure_optimizers(self):
        settings = self.settings.optimizer
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = build_optimizer(settings.name, params, settings.learning_rate, settings.weight_decay)
        schedule = build_schedule(settings.lr_scheduler, optimizer, settings.warmup_steps,
                                  self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ------------------------------------------------------------------------------------- checkpoints
    def trainable_names(self) -> dict[str, torch.Size]:
        """Trainable weights and their full shapes, named as in checkpoints. Recorded when the model is built:
        FSDP later puts wrapper prefixes in the names and flattens each process's share of the weights."""
        return dict(self._trainable)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["rng_states"] = rng_states()  # LoRA dropout draws: a resumed run draws the same masks

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        # Restored at the first batch, not when the checkpoint is read: building the dataloader iterator in between
        # draws from the global generator. A checkpoint from inside an epoch: the uninterrupted run made no such
        # draw at this point. One from between two epochs: it did (the next epoch's iterator takes one int64 for
        # its base seed), so make that draw again (Lightning skips on_train_epoch_start on such a restart).
        if self._rng_to_restore is not None:
            restore_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
            if self._rng_at_epoch_start:
                replay_epoch_start_draw()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get("rng_states")
        batches = saved_batch_progress(checkpoint) or {}
        # between epochs: no batch of the next epoch ran (EpochPosition), or saved on the epoch's last batch
        self._rng_at_epoch_start = (batches.get("current", {}).get("processed") == 0
                                    or bool(batches.get("is_last_batch")))
        self.check_saved_weights(checkpoint.get("state_dict", {}))

    def check_saved_weights(self, saved: dict) -> None:
        """The checkpoint holds a weight of the right shape for every trainable weight, else one line."""
        check_lora_weights(self.trainable_names(), saved, "checkpoint", self.settings.lora)

    # ----------------------------------------------------------------------------------------- adapter
    def save_adapter(self, directory: str | Path) -> Path:
        """Write the adapter in PEFT format (`adapter_config.json` + `adapter_model.safetensors`), atomically.

        In a Trainer every process calls it: under FSDP the LoRA weights are first gathered from all of them
        (a collective), and only rank 0 writes."""
        directory = Path(directory)
        trainer = attached_trainer(self)
        state = None
        if trainer is not None and strategy_kind(trainer.strategy) == "fsdp":
            trainable = self.trainable_names()
            gathered = trainer.strategy.lightning_module_state_dict()  # full, on rank 0 only
            state = {k.removeprefix(MODULE_PREFIX): v for k, v in gathered.items() if k in trainable}
        if trainer is not None and not trainer.is_global_zero:
            return directory
        with atomic_path(directory) as tmp:
            self.model.save_pretrained(tmp, **({"state_dict": state} if state is not None else {}))
            if trainer is not None and (run_dir(trainer) / PROMPT_FORMAT_FILE).is_file():
                shutil.copy2(run_dir(trainer) / PROMPT_FORMAT_FILE, tmp / PROMPT_FORMAT_FILE)  # how to prompt it
        return directory

    def on_train_end(self) -> None:
        path = self.save_adapter(run_dir(self.trainer) / ADAPTER_DIR)
        if self.trainer.is_global_zero:
            log.info("adapter written to %s", path)


# The CLI's help for each flat setting is its field docstring in `nextai.modules.settings` (written once, there).
QLoRAModule.__doc__ += "\n    Args:\n" + "".join(f"        {name}: {text}\n" for name, text in flat_help().items())
