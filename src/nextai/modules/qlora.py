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
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric

from nextai.atomic import atomic_path
from nextai.errors import NextaiError
from nextai.modules.activations import PinnedOffloader, apply_layer_policies, decoder_layers, describe_policies
from nextai.modules.attention import PACKED_KWARGS, AttentionChoice, choose_attention
from nextai.modules.kernels import apply_liger_kernels, check_layers_compiled, compile_decoder_layers
from nextai.modules.loading import load_causal_lm
from nextai.modules.lora import check_targets_exist, lora_config, lora_target_modules
from nextai.modules.loss import describe_linear_cross_entropy, linear_cross_entropy
from nextai.modules.memory_plan import budget_bytes, cap_allocator, measure_layer, plan_layers
from nextai.modules.nf4_dequant import DequantKernel, resolve_kernel
from nextai.modules.optim import (SCHEDULES, STATE_BYTES_PER_PARAM, OptimizerName, build_optimizer,
                                  build_schedule, check_optimizer)
from nextai.modules.quantization import Quantization, keep_cpu_layout_trainable
from nextai.progress import saved_batch_progress
from nextai.rundir import ADAPTER_DIR, PROMPT_FORMAT_FILE, run_dir
from nextai.strategies import check_fsdp_model, is_fsdp
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
    """Fine-tunes `base_model` (hub id, local path, or `tiny`) with LoRA on top of its quantized weights.

    Args:
        base_model: hub id (`meta-llama/Llama-2-70b-hf`), local directory, or `tiny` (the embedded default).
        quantization: bitsandbytes settings (report Table 2 by default).
        attn_implementation: `auto` picks flash_attention_2 when flash-attn imports and a GPU is present, else sdpa.
        gradient_checkpointing: recompute activations in the backward pass (non-reentrant).
        lora_r, lora_alpha, lora_dropout: LoRA rank, scale numerator and dropout.
        lora_targets: a preset of the report's Table 5 (`key_query`, `attention`, `ffn`, `all`,
            `attention_ffn_output`) or a list of module names.
        optimizer: `paged_adamw_8bit` (bitsandbytes), `adamw_8bit` or `adamw` (torch).
        learning_rate, weight_decay: optimizer settings.
        lr_scheduler: transformers schedule name, stepped every optimizer step after `warmup_steps` of linear warmup.
        cutoff_len: longest training sequence (linked from `data.cutoff_len`); checked against the model's positions.
        packing: batches are padding-free packs (linked from `data.packing`): picks a varlen attention kernel.
        micro_batch_tokens: most tokens in one micro batch (linked from the data settings); sizes the memory plan.
        kbit_preparation: peft's `prepare_model_for_kbit_training`, which also upcasts the frozen embeddings, norms
            and output layer to fp32 (about 1 GiB more at 70B); false keeps them in bf16.
        fused_cross_entropy: compute the loss without full-vocabulary logits (Liger's fused kernel on CUDA when
            installed, chunked torch otherwise).
        liger_kernels: Liger-kernel's fused RMSNorm, SwiGLU and RoPE (CUDA).
        compile_layers: `torch.compile` each decoder layer (its forward and recomputation).
        offload_activations: checkpointed layers keep their input in pinned CPU memory instead of on the GPU.
        memory_budget: a cap such as `38GiB`, or `card`: per decoder layer, keep activations, recompute them or
            offload their input, whichever makes the step fastest under the cap, and hold torch's allocator to the
            cap (CUDA; overrides `gradient_checkpointing` and `offload_activations`).
        lora_dtype: dtype of the LoRA weights (and so of their gradients).
        lean_lora: 4-bit LoRA layers keep their input and the dropout mask's seed for the backward pass instead of
            peft's dropout output and mask (the same function and gradients; 0.2 GiB less per 70B decoder layer at
            4096 tokens).
        dequant_kernel: the kernel that dequantizes each NF4 weight before its GEMMs: `triton` (CUDA; nextai's,
            bit-equal to bitsandbytes and faster; the lean LoRA layers then also compute LoRA's input side and its
            dropout in fused Triton kernels), `bitsandbytes`, or `auto` (Triton on CUDA when it imports).
    """

    def __init__(
        self,
        base_model: str = "tiny",
        quantization: Quantization = Quantization(),
        attn_implementation: AttentionChoice = "auto",
        gradient_checkpointing: bool = True,
        lora_r: int = 4,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        lora_targets: str | list[str] = "attention_ffn_output",
        optimizer: OptimizerName = "paged_adamw_8bit",
        learning_rate: float = 3e-4,
        weight_decay: float = 0.0,
        lr_scheduler: str = "cosine",
        warmup_steps: int = 100,
        cutoff_len: int = 1024,
        packing: bool = False,
        micro_batch_tokens: int | None = None,
        kbit_preparation: bool = True,
        fused_cross_entropy: bool = False,
        liger_kernels: bool = False,
        compile_layers: bool = False,
        offload_activations: bool = False,
        memory_budget: str | None = None,
        lora_dtype: Literal["float32", "bfloat16"] = "float32",
        lean_lora: bool = True,
        dequant_kernel: DequantKernel = "auto",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.quantization = quantization
        # Fail at construction (before any data or weights are touched) on values that can never work.
        lora_config(lora_r, lora_alpha, lora_dropout, lora_targets)
        check_optimizer(optimizer)
        if lr_scheduler not in SCHEDULES:
            raise NextaiError(f"model.lr_scheduler: unknown schedule '{lr_scheduler}'; "
                              f"expected one of {', '.join(SCHEDULES)}")
        if learning_rate <= 0:
            raise NextaiError(f"model.learning_rate must be positive, got {learning_rate}")
        if cutoff_len <= 0:
            raise NextaiError(f"cutoff_len must be a positive number of tokens, got {cutoff_len}")
        if memory_budget not in (None, "card"):
            budget_bytes(memory_budget, torch.device("cpu"))  # parse now: a bad value fails before loading
        if compile_layers and offload_activations:
            raise NextaiError("model.compile_layers with model.offload_activations: torch.compile does not trace "
                              "the offloading hooks, so the layers would run uncompiled; choose one")
        if compile_layers and lean_lora:
            raise NextaiError("model.compile_layers with model.lean_lora: torch.compile does not trace the lean LoRA "
                              "layers (custom autograd functions), so the layers would run uncompiled; set "
                              "model.lean_lora false to compile them")
        self.strict_loading = False  # checkpoints hold the trainable weights only; on_load_checkpoint checks them
        self.model = None
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
            if self._trainer is None:
                self.build_model("cpu")
            else:
                self.build_model(self._trainer.strategy.root_device, sharded=is_fsdp(self._trainer.strategy))

    def check_device(self, device: torch.device | str) -> None:
        """Options that need a CUDA GPU fail here, before anything is loaded or written, on other devices."""
        hp = self.hparams
        device = torch.device(device)
        cuda_only = [name for name in ("liger_kernels", "offload_activations", "memory_budget") if hp.get(name)]
        if hp.get("dequant_kernel", "auto") == "triton":
            cuda_only.append("dequant_kernel")
        if cuda_only and device.type != "cuda":
            raise NextaiError(f"model.{cuda_only[0]} needs a CUDA GPU; this run is on the {device.type}")
        choose_attention(hp.attn_implementation, device.type, packed=hp.get("packing", False))

    def build_model(self, device: torch.device | str, base=None, sharded: bool = False) -> None:
        """Load the quantized base on `device` (or take an already loaded `base`, as benchmarks sweeping LoRA
        settings do), prepare it for k-bit training, add the LoRA adapters and choose what each layer keeps for
        the backward pass.

        `sharded` (FSDP): the frozen weights stay in bf16 (no fp32 upcast: every FSDP unit flattens one dtype, and
        FSDP computes in bf16 anyway) and the strategy, not the model, recomputes the decoder layers."""
        from peft import get_peft_model, prepare_model_for_kbit_training

        hp = self.hparams
        device = torch.device(device)
        if sharded:
            check_fsdp_model(hp)
        self.check_device(device)
        model = base if base is not None else load_causal_lm(hp.base_model, self.quantization,
                                                             hp.attn_implementation, device,
                                                             packed=hp.get("packing", False))
        keep_cpu_layout_trainable(model)
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and hp.cutoff_len > positions:
            raise NextaiError(f"data.cutoff_len {hp.cutoff_len} exceeds the {positions} positions of "
                              f"'{hp.base_model}'")
        check_targets_exist(model, lora_target_modules(hp.lora_targets))
        if hp.get("liger_kernels"):  # on the transformers model, before peft wraps its projections
            log.info("kernels: %s", apply_liger_kernels(model, device.type))
        checkpointing = {"use_reentrant": False}
        if self.quantization.enabled and hp.get("kbit_preparation", True) and not sharded:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=hp.gradient_checkpointing,
                                                    gradient_checkpointing_kwargs=checkpointing)
        else:
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            if hp.gradient_checkpointing and not sharded:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
        model = get_peft_model(model, lora_config(hp.lora_r, hp.lora_alpha, hp.lora_dropout, hp.lora_targets))
        self.model = model
        self._trainable = {f"model.{name}": p.shape for name, p in model.named_parameters() if p.requires_grad}
        if hp.get("lora_dtype", "float32") != "float32":
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.data = parameter.data.to(getattr(torch, hp.lora_dtype))
        lean, kernel = hp.get("lean_lora", False), resolve_kernel(hp.get("dequant_kernel", "auto"), device.type)
        if lean and sharded:  # FSDP gathers each LoRA weight in its own unit's forward, which the lean layer skips
            log.info("4-bit layers: lean LoRA is off under FSDP (peft's layers run, their LoRA weights sharded)")
            lean = False
        if self.quantization.load_in_4bit:
            from nextai.modules.lean_lora import make_lean

            log.info("4-bit layers: %s", make_lean(model, lean, kernel))
        # Offloaded layers use torch's reentrant checkpoint, which only propagates gradients to inputs that
        # require them: make the embeddings' output require grad.
        model.enable_input_require_grads()
        if hp.get("fused_cross_entropy"):
            log.info("loss: %s", describe_linear_cross_entropy(device.type))
        # from_pretrained returns eval mode, and transformers only checkpoints activations in train mode.
        model.train()
        self.model = model
        if sharded:
            log.info("activations: %s by the FSDP strategy", "decoder layers recomputed" if hp.gradient_checkpointing
                     else "all kept")
        else:
            self._choose_layer_policies(device)
        if hp.get("compile_layers"):
            # After the activation policies: the memory plan was measured on uncompiled layers.
            log.info("kernels: %s", compile_decoder_layers(decoder_layers(model)))
            if self.memory_plan is not None and "offload" in self.memory_plan.policies:
                log.warning("kernels: the memory plan offloads some layers; torch.compile does not trace the "
                            "offloading hooks, so those layers run uncompiled")
        trainable, total = count_parameters(model)
        rank_zero_info(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.4f} %), "
                       f"LoRA r={hp.lora_r} on {', '.join(lora_target_modules(hp.lora_targets))}")

    def _choose_layer_policies(self, device: torch.device) -> None:
        hp = self.hparams
        layers = len(decoder_layers(self.model))
        if hp.get("memory_budget"):
            tokens = hp.get("micro_batch_tokens") or hp.cutoff_len
            cost = measure_layer(self.model, tokens, packed=hp.get("packing", False))
            torch.cuda.reset_peak_memory_stats(device)  # the probe's transient is not the training step's
            plan = plan_layers(layers, budget_bytes(hp.memory_budget, device), self._static_bytes(device, tokens),
                               cost)
            self.memory_plan = plan
            policies = plan.policies
            log.info("memory plan for %d tokens a micro batch: %s", tokens, plan.summary())
            if hp.memory_budget != "card":
                fraction = cap_allocator(plan.budget_bytes, device)
                log.info("memory cap: torch's allocator may reserve %.1f GiB (%.1f %% of the card)",
                         gib(plan.budget_bytes), 100 * fraction)
        elif hp.gradient_checkpointing:
            policies = ["offload" if hp.get("offload_activations") else "recompute"] * layers
        else:
            policies = ["keep"] * layers
        apply_layer_policies(self.model, policies, self._offloader)
        log.info("activations: %s", describe_policies(policies))

    def _static_bytes(self, device: torch.device, tokens: int) -> int:
        """What a step holds besides the decoder layers' activations: weights now allocated, LoRA gradients and
        optimizer state, the loss over `tokens`, the embeddings' and final norm's activations and gradients, and
        128 MiB of allocator and library workspace."""
        hp = self.hparams
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        config = self.model.get_base_model().config
        if hp.get("fused_cross_entropy"):  # one chunk of fp32 logits and its gradient
            loss = min(tokens, 1024) * config.vocab_size * (4 + 4)
        else:  # bf16 logits, their fp32 upcast and its gradient
            loss = tokens * config.vocab_size * (2 + 4 + 4)
        width = 4 if hp.get("kbit_preparation", True) else 2  # the residual stream's dtype
        boundary = 2 * tokens * config.hidden_size * width  # embeddings output and final hidden states, with grads
        optimizer = trainable * (4 + STATE_BYTES_PER_PARAM[hp.optimizer])
        return torch.cuda.memory_allocated(device) + optimizer + loss + 2 * boundary + (128 << 20)

    # ------------------------------------------------------------------------------------------- steps
    def forward(self, batch: dict):
        """The model's output for a batch; with `fused_cross_entropy` only the loss (no logits)."""
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        if not self.hparams.get("fused_cross_entropy"):
            return self.model(**inputs, labels=batch["labels"], use_cache=False)
        base = self.model.get_base_model()
        hidden = base.get_decoder()(**inputs, use_cache=False).last_hidden_state
        loss = linear_cross_entropy(hidden, base.get_output_embeddings().weight, batch["labels"])
        from transformers.modeling_outputs import CausalLMOutputWithPast

        return CausalLMOutputWithPast(loss=loss)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self(batch).loss
        if self.hparams.get("compile_layers") and self.global_step == 0 and batch_idx == 0:
            check_layers_compiled()
        self.log("train_loss", loss, on_step=True, prog_bar=True, batch_size=batch["input_ids"].size(0))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = self(batch).loss
        predicted = (batch["labels"][:, 1:] != -100).sum()
        self.val_loss.update(loss, weight=predicted)  # token-weighted mean over the whole split
        self.log("val_loss", self.val_loss, on_epoch=True, prog_bar=True, batch_size=batch["input_ids"].size(0))

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = build_optimizer(hp.optimizer, params, hp.learning_rate, hp.weight_decay)
        schedule = build_schedule(hp.lr_scheduler, optimizer, hp.warmup_steps, self.trainer.estimated_stepping_batches)
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
                torch.empty((), dtype=torch.int64).random_()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get("rng_states")
        batches = saved_batch_progress(checkpoint) or {}
        # between epochs: no batch of the next epoch ran (EpochPosition), or saved on the epoch's last batch
        self._rng_at_epoch_start = (batches.get("current", {}).get("processed") == 0
                                    or bool(batches.get("is_last_batch")))
        self.check_saved_weights(checkpoint.get("state_dict", {}))

    def check_saved_weights(self, saved: dict) -> None:
        """The checkpoint holds a weight of the right shape for every trainable weight, else one line."""
        for name, shape in self.trainable_names().items():
            if name not in saved:
                raise NextaiError(f"checkpoint has no weights for {name}: it was saved with other LoRA targets "
                                  f"than {self.hparams.lora_targets!r}")
            if saved[name].shape != shape:
                raise NextaiError(f"checkpoint weight {name} has shape {tuple(saved[name].shape)}, the model "
                                  f"expects {tuple(shape)} (another lora_r than {self.hparams.lora_r}?)")

    # ----------------------------------------------------------------------------------------- adapter
    def save_adapter(self, directory: str | Path) -> Path:
        """Write the adapter in PEFT format (`adapter_config.json` + `adapter_model.safetensors`), atomically.

        In a Trainer every process calls it: under FSDP the LoRA weights are first gathered from all of them
        (a collective), and only rank 0 writes."""
        directory = Path(directory)
        trainer = self._trainer
        state = None
        if trainer is not None and is_fsdp(trainer.strategy):
            trainable = self.trainable_names()
            gathered = trainer.strategy.lightning_module_state_dict()  # full, on rank 0 only
            state = {k.removeprefix("model."): v for k, v in gathered.items() if k in trainable}
        if trainer is not None and not trainer.is_global_zero:
            return directory
        with atomic_path(directory) as tmp:
            self.model.save_pretrained(tmp, **({"state_dict": state} if state is not None else {}))
            if trainer is not None and (run_dir(trainer) / PROMPT_FORMAT_FILE).is_file():
                shutil.copy2(run_dir(trainer) / PROMPT_FORMAT_FILE, tmp / PROMPT_FORMAT_FILE)  # how to prompt it
        return directory

    def on_train_end(self) -> None:
        path = self.save_adapter(run_dir(self.trainer) / ADAPTER_DIR)
        rank_zero_info(f"adapter written to {path}")
