"""`InstructionDataModule`: records -> tokenized, cached, split, length-grouped micro batches."""

import hashlib
import json
import logging
import warnings
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from nextai.atomic import atomic_path
from nextai.data.batching import accumulation_steps
from nextai.data.collate import PadCollator
from nextai.data.packing import PackCollator, PackedBatchSampler
from nextai.data.chat import AUTO, resolve_chat_template
from nextai.data.dataset import as_record_source
from nextai.data.formats import Format
from nextai.data.prompt import PromptFormat
from nextai.data.records import RecordSource, record_format
from nextai.data.sampler import MicroBatchSampler, position_for_processes
from nextai.data.tokenize import (has_labels, load_tokenizer, template_fingerprint, tokenize_records,
                                  tokenizer_fingerprint)
from nextai.errors import NextaiError
from nextai.paths import default_cache_dir
from nextai.internals import batches_done_in_epoch, between_epochs

log = logging.getLogger(__name__)
# Lightning warns when a mid-epoch resume meets a DataLoader without state_dict; the position inside the epoch is
# this datamodule's state instead (saved in every checkpoint, applied to the sampler in train_dataloader).
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


class InstructionDataModule(L.LightningDataModule):
    """Instruction-tuning data: Alpaca records, conversations or prompt/completion pairs, from any dataset.

    Args:
        source: a data file (.json, .jsonl, .csv, .tsv, .parquet, .arrow), a directory of them, a `save_to_disk`
            folder, a hub dataset id, a registered source name (`dolly`, read by its adapter), `bundled:NAME` for a
            sample shipped with nextai, or a source object such as a `Mixture` (class_path/init_args in YAML).
        format: how a file or hub dataset's rows are read: `auto` (from the fields, logged), `alpaca`,
            `messages`, `sharegpt` or `prompt_completion`; for a conversation source (guanaco, lima, faithdial),
            `messages` keeps the turns.
        columns: the dataset's names for nextai's fields and roles, e.g. `{instruction: question, output: answer}`
            or `{messages: dialog, user: human}` (see `nextai.data.formats`).
        chat_template: how conversations are rendered: `auto` (the tokenizer's own template) or a named one
            (`llama-2-chat`, `chatml`); the end-of-turn token comes from the template.
        tokenizer: the base model's tokenizer (linked from `model.base_model`).
        cutoff_len: longest example in tokens; longer ones are cut (report: 1024).
        train_on_inputs: also learn the prompt tokens (report: false, prompt labels are -100).
        add_eos_token: end every untruncated example with EOS (report: true).
        val_size: validation examples: a fraction in (0, 1) or a count >= 1 (0 = no validation).
        seed: the split and the epoch order.
        batch_size: effective batch in examples (report: 4), whatever the number of processes: each accumulates
            batch_size / (micro_batch_size x processes) micro batches.
        micro_batch_size: examples per forward pass (report: 1).
        group_by_length: HF-style length grouping (report: true); with packing, the pack holding the longest
            example goes first.
        packing: padding-free packing: each micro batch is a pack of whole examples of at most `pack_length`
            tokens (micro_batch_size then counts packs).
        pack_length: tokens per pack (at least cutoff_len).
        num_workers: DataLoader worker processes.
        cache_dir: where tokenized data is kept and reused (default: $NEXTAI_CACHE_DIR or ~/.cache/nextai).
    """

    def __init__(
        self,
        source: str | RecordSource,
        format: Format = "auto",
        columns: dict[str, str] | None = None,
        chat_template: str = AUTO,
        tokenizer: str = "tiny",
        cutoff_len: int = 1024,
        train_on_inputs: bool = False,
        add_eos_token: bool = True,
        val_size: int | float = 0.05,
        seed: int = 42,
        batch_size: int = 4,
        micro_batch_size: int = 1,
        group_by_length: bool = True,
        packing: bool = False,
        pack_length: int = 4096,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if cutoff_len <= 0:
            raise NextaiError(f"data.cutoff_len must be a positive number of tokens, got {cutoff_len}")
        if val_size < 0 or (val_size >= 1 and val_size != int(val_size)):
            raise NextaiError(f"data.val_size must be a fraction in [0, 1) or a whole count, got {val_size}")
        if num_workers < 0:
            raise NextaiError(f"data.num_workers must be >= 0, got {num_workers}")
        accumulation_steps(batch_size, micro_batch_size)
        if packing and pack_length < cutoff_len:
            raise NextaiError(f"data.pack_length {pack_length} is shorter than data.cutoff_len {cutoff_len}: "
                              "a full-length example could not fit in a pack")
        if packing and micro_batch_size != 1:
            raise NextaiError(f"data.micro_batch_size must be 1 with packing (a micro batch is one pack of "
                              f"data.pack_length tokens), got {micro_batch_size}")
        self.source = as_record_source(source, format, columns)
        self.chat_template = chat_template
        self.tokenizer_name = tokenizer
        self.cutoff_len = cutoff_len
        self.train_on_inputs = train_on_inputs
        self.add_eos_token = add_eos_token
        self.val_size = val_size
        self.seed = seed
        self.batch_size = batch_size
        self.micro_batch_size = micro_batch_size
        self.group_by_length = group_by_length
        self.packing = packing
        self.pack_length = pack_length
        self.num_workers = num_workers
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.tokenizer = None
        self.train_set = None
        self.val_set = None
        self._resume_position: dict | None = None
        self._train_sampler = None  # the training loader's batch sampler, once built
        self._data_key: str | None = None  # the tokenized set in use (records, tokenizer, cutoff, masking)
        self.prompt_format: PromptFormat | None = None  # how the examples were written (set by setup)

    # ---------------------------------------------------------------------------------- preparation
    def _tokenizer(self):
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.tokenizer_name)
        return self.tokenizer

    def cache_key(self) -> str:
        """Changes whenever the tokenized examples would differ: records, tokenizer, template or settings."""
        tokenizer = self._tokenizer()
        parts = {"records": self.source.fingerprint(), "tokenizer": tokenizer_fingerprint(tokenizer),
                 "template": template_fingerprint(), "cutoff_len": self.cutoff_len,
                 "train_on_inputs": self.train_on_inputs, "add_eos_token": self.add_eos_token,
                 "chat_template": [self.chat_template, str(tokenizer.chat_template or "")]}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def tokenized_path(self, key: str | None = None) -> Path:
        """Where the tokenized set of `key` (default: this configuration's `cache_key()`) is cached."""
        return self.cache_dir / "tokenized" / (key or self.cache_key())

    def prepare_data(self) -> None:
        """Tokenize once; later runs with the same records, tokenizer and settings reuse the cached result."""
        import datasets

        path = self.tokenized_path()
        if (path / "dataset_info.json").exists():
            log.info("tokenized data: reusing %s", path)
            return
        records = self.source.load()
        if not records:
            raise NextaiError(f"{self.source.describe()}: no records")
        tokenizer = self._tokenizer()
        prompt_format = self.make_prompt_format(sorted({record_format(r) for r in records}))
        log.info("prompt format: %s", prompt_format.describe())
        tokenized = datasets.Dataset.from_dict(tokenize_records(
            records, tokenizer, prompt_format, self.cutoff_len, self.train_on_inputs, self.add_eos_token))
        kept = tokenized.filter(has_labels, desc="dropping examples without response tokens")
        if len(kept) == 0:
            raise NextaiError(f"{self.source.describe()}: no example has response tokens left within "
                              f"cutoff_len {self.cutoff_len}")
        cut = sum(kept["truncated"])
        log.info("tokenized %d records: %d kept, %d dropped (prompt fills cutoff_len or empty response), "
                 "%d cut at %d tokens", len(records), len(kept), len(tokenized) - len(kept), cut, self.cutoff_len)
        with atomic_path(path) as tmp:
            kept.save_to_disk(str(tmp))
            prompt_format.save(tmp)

    def make_prompt_format(self, formats: list[str]) -> PromptFormat:
        """The renderer for records of `formats`: a chat template is resolved only when conversations are among
        them (a tokenizer without one is fine for Alpaca data)."""
        template = None
        if "messages" in formats:
            template = resolve_chat_template(self._tokenizer(), self.chat_template, f"tokenizer '{self.tokenizer_name}'")
        return PromptFormat(tuple(formats), template)

    def setup(self, stage: str) -> None:
        import datasets

        if self.train_set is not None:
            return
        self._data_key = self.cache_key()
        path = self.tokenized_path(self._data_key)
        dataset = datasets.load_from_disk(str(path))
        self.prompt_format = PromptFormat.load(path) or PromptFormat()
        val_count = self._val_count(len(dataset))
        if val_count:
            split = dataset.train_test_split(test_size=val_count, seed=self.seed, shuffle=True)
            self.train_set, self.val_set = split["train"], split["test"]
        else:
            self.train_set, self.val_set = dataset, None
        log.info("data: %d training and %d validation examples", len(self.train_set),
                 len(self.val_set) if self.val_set is not None else 0)

    def _val_count(self, total: int) -> int:
        count = int(self.val_size) if self.val_size >= 1 else round(self.val_size * total)
        if self.val_size and count == 0:
            count = 1
        if count >= total:
            raise NextaiError(f"data.val_size {self.val_size} leaves no training examples out of {total}")
        return count

    # ---------------------------------------------------------------------------------- loaders
    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        rank, world_size = self._rank()
        if self.packing:
            sampler = PackedBatchSampler(dataset["length"], self.pack_length, self.seed,
                                         group_by_length=self.group_by_length, shuffle=shuffle, rank=rank,
                                         world_size=world_size)
            collate = PackCollator(self.pack_length)
        else:
            # Length groups span one optimizer step of all processes (the sampler multiplies by world_size), so
            # every process count cuts the same epoch into the same steps.
            sampler = MicroBatchSampler(dataset["length"], self.micro_batch_size,
                                        max(self.batch_size // world_size, self.micro_batch_size), self.seed,
                                        group_by_length=self.group_by_length, shuffle=shuffle, rank=rank,
                                        world_size=world_size)
            collate = PadCollator(self._tokenizer().pad_token_id)
        return DataLoader(dataset.with_format(columns=["input_ids", "labels"]), batch_sampler=sampler,
                          collate_fn=collate, num_workers=self.num_workers)

    def _rank(self) -> tuple[int, int]:
        """Each process of a distributed run draws its own share of every epoch's micro batches."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self.train_set, shuffle=True)
        self._train_sampler = loader.batch_sampler
        self._apply_resume_position()
        return loader

    def _apply_resume_position(self) -> None:
        """Point the training sampler at the restored position, once both exist. Usually the state is restored
        first; under FSDP Lightning restores it after building the training loader (`restore_checkpoint_after_setup`)
        and does not build it again."""
        if self._resume_position is None or self._train_sampler is None:
            return
        position, self._resume_position = self._resume_position, None
        batches_done = position["batches_done"]
        if batches_done:  # at an epoch's start nothing is skipped: any settings may change
            saved = position.get("sampling") or {}
            self._check_same_sampling(saved)
            batches_done = self._position_here(batches_done, saved.get("processes", self._rank()[1]))
        self._train_sampler.resume_at(position["epoch"], batches_done)

    def _position_here(self, batches_done: int, saved_processes: int) -> int:
        """The epoch position for this run's process count (Lightning's batch counters are moved the same way by
        `EpochPosition`, which the nextai CLI always adds)."""
        rank, processes = self._rank()
        if processes == saved_processes:
            return batches_done
        if not any(getattr(c, "moves_epoch_position", False) for c in self.trainer.callbacks):
            raise NextaiError(f"the checkpoint is inside an epoch on {saved_processes} process(es) and this run has "
                              f"{processes}: add the callback nextai.callbacks.EpochPosition (it moves "
                              f"Lightning's batch counters too), or resume on {saved_processes}")
        here = position_for_processes(batches_done, saved_processes, processes)
        if here >= len(self._train_sampler):
            raise NextaiError(f"the checkpoint's {batches_done * saved_processes} micro batches of its epoch are "
                              f"all that {processes} processes train of it: resume on {saved_processes} "
                              f"process(es), or from the next epoch's first checkpoint")
        if rank == 0:
            log.info("resume: %d micro batches into the epoch on each of %d process(es) = %d on each of %d: the same "
                     "%d micro batches of the epoch's plan are skipped", batches_done, saved_processes, here,
                     processes, batches_done * saved_processes)
        return here

    def _sampling(self) -> dict:
        """What decides which examples form the n-th micro batch of an epoch: a resume must see the same, apart from
        the process count, which only changes who trains which micro batch of the plan (see `_position_here`)."""
        return {"tokenized_data": self._data_key, "seed": self.seed, "batch_size": self.batch_size,
                "micro_batch_size": self.micro_batch_size, "group_by_length": self.group_by_length,
                "packing": self.packing, "pack_length": self.pack_length if self.packing else None,
                "processes": self._rank()[1]}

    def _check_same_sampling(self, saved: dict | None) -> None:
        if not saved:
            return  # a checkpoint from before this check
        now = self._sampling()
        # The process count may change: the epoch plan is the same for any count (see _position_here).
        changed = [f"{key} {saved[key]} -> {now[key]}" for key in saved
                   if key in now and key != "processes" and saved[key] != now[key]]
        if changed:
            raise NextaiError(f"the checkpoint's position in the epoch means other examples with these settings "
                              f"({'; '.join(changed)}): resume with the data settings it was trained with, or "
                              f"start from its adapter")

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []

    # ---------------------------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        """Where training stands inside the current epoch, read from the trainer's own progress counters."""
        if self.trainer is None:
            return {}
        # An epoch whose batches all ran resumes as the next epoch's start (see EpochPosition).
        batches_done = 0 if between_epochs(self.trainer) else batches_done_in_epoch(self.trainer)
        return {"epoch": self.trainer.current_epoch, "batches_done": batches_done, "sampling": self._sampling()}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            self._resume_position = dict(state_dict)
            self._apply_resume_position()
