"""`nextai push`: upload an export (the run's adapter, `merged/`, a GGUF folder) to a Hugging Face Hub model repo
with `huggingface_hub` (Axolotl's `hub_model_id`, Unsloth's `push_to_hub_merged`); `--dry_run` lists what would go,
offline.

A folder whose README.md is missing or peft's blank card gets nextai's card first (`nextai.eval.card`), so what is
uploaded says what happened. The token is huggingface_hub's own (`HF_TOKEN`, or `hf auth login`).
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from nextai.errors import NextaiError, first_line
from nextai.rundir import ADAPTER_DIR

log = logging.getLogger(__name__)

IGNORE_PATTERNS = [".*", "*/.*"]  # hidden files: editors' and nextai's own temporaries
BLANK_CARD = "[More Information Needed]"  # what peft's template leaves in every section


@dataclass(frozen=True)
class Upload:
    folder: Path
    files: list[tuple[str, int]]  # (path in the repo, bytes)
    card: object | None  # a ModelCard to write first, or None to upload the folder's own README.md


def export_kind(folder: Path) -> str | None:
    """adapter, merged or gguf, for a folder nextai can write a card for; None otherwise."""
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    if any(folder.glob("*.gguf")):
        return "gguf"
    if (folder / "config.json").is_file():
        return "merged"
    return None


def needs_card(folder: Path) -> bool:
    readme = folder / "README.md"
    return not readme.is_file() or BLANK_CARD in readme.read_text(encoding="utf-8", errors="replace")


def plan_upload(folder: Path, card) -> Upload:
    """What `upload_folder` will send: every file but hidden ones and huggingface_hub's own ignores."""
    from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
    from huggingface_hub.utils import filter_repo_objects

    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    kept = list(filter_repo_objects(paths, ignore_patterns=IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS))
    files = [(path, (folder / path).stat().st_size) for path in kept]
    if card is not None and "README.md" not in kept:
        files.append(("README.md", len(str(card).encode())))
    return Upload(folder, sorted(files), card)


def resolve_folder(folder: str | None, run_directory: Path) -> Path:
    """`folder` as given (relative to the working directory, else to the run directory); default the run's
    adapter."""
    if folder is None:
        chosen = run_directory / ADAPTER_DIR
    else:
        given = Path(folder).expanduser()
        chosen = given if given.exists() or given.is_absolute() else run_directory / given
    if not chosen.is_dir():
        raise NextaiError(f"push: no folder {chosen} to upload (give --folder: the run's adapter, merged, "
                          f"gguf-q8_0, or any directory)")
    if not any(p.is_file() for p in chosen.rglob("*")):
        raise NextaiError(f"push: {chosen} holds no files")
    return chosen


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise NextaiError(f"push: --repo_id {repo_id!r} is not a hub repo id ({first_line(err)})") from None


def listing(upload: Upload, repo_id: str, private: bool) -> str:
    total = sum(size for _, size in upload.files)
    lines = [f"would upload {len(upload.files)} files ({total / 2**20:,.1f} MiB) from {upload.folder} to "
             f"https://huggingface.co/{repo_id} ({'private' if private else 'public'} model repo):"]
    lines += [f"  {path}  {size:,} bytes" + ("  (model card, written by nextai before the upload)"
                                             if path == "README.md" and upload.card is not None else "")
              for path, size in upload.files]
    return "\n".join(lines)


def push(folder: Path, repo_id: str, private: bool, dry_run: bool, card, commit_message: str) -> str:
    """Upload `folder` to `repo_id` (or, with `dry_run`, say what would go); returns what was printed."""
    check_repo_id(repo_id)
    upload = plan_upload(folder, card)
    if dry_run:
        return listing(upload, repo_id, private)
    from huggingface_hub import HfApi

    from nextai.eval.card import write_card

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if card is not None:  # only once the hub answered: an offline push leaves the folder as it was
            write_card(folder, card)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                                 ignore_patterns=list(IGNORE_PATTERNS), repo_type="model")
    except Exception as err:  # noqa: BLE001 - offline, no token, no rights, network: one line
        hint = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") else ""
        raise NextaiError(f"push: upload to {repo_id} failed{hint}: {type(err).__name__}: {first_line(err)}") \
            from None
    return f"uploaded {len(upload.files)} files from {folder} to {getattr(info, 'commit_url', repo_id)}"


def push_run(module, datamodule, run_directory: Path, folder: str | None, repo_id: str, private: bool,
             dry_run: bool) -> str:
    """`NextaiTrainer.push`: the folder, its card if it needs one, the upload."""
    from nextai.eval.card import build_card, describe_data

    chosen = resolve_folder(folder, run_directory)
    card = None
    kind = export_kind(chosen)
    if kind is not None and needs_card(chosen):
        card = build_card(kind, run_directory, module.settings.base_model, str(chosen), describe_data(datamodule),
                          repo=repo_id)
    message = f"nextai: {kind or 'folder'} of run {run_directory.resolve().name}"
    return push(chosen, repo_id, private, dry_run, card, message)
