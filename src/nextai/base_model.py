"""What `model.base_model` names, as a directory transformers loads: hub ids and local folders pass through, `tiny`
is built on first use, and a GGUF file (or a folder holding one) is dequantized once by transformers' GGUF reader
into a cached safetensors copy with its tokenizer and chat template, then quantized to NF4 like any base.

The copy's cache key holds the file's SHA-256, so an edited or replaced file is converted again; the hash of a file
is kept by its path, size and modification time, so a 40 GB file is read once, not at every start.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from nextai.atomic import exclusive
from nextai.errors import NextaiError, first_line
from nextai.paths import default_cache_dir
from nextai.tiny import TINY_NAME, ensure_tiny_model

log = logging.getLogger(__name__)

GGUF_SUFFIX = ".gguf"
GGUF_CACHE = "gguf"  # under the nextai cache
CONVERT_VERSION = "1"  # bump when the conversion writes something else


def gguf_file(path: Path) -> Path | None:
    """The GGUF file `path` names: the file itself, or the only .gguf in a folder that is no transformers checkpoint."""
    if path.is_file() and path.suffix == GGUF_SUFFIX:
        return path
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob(f"*{GGUF_SUFFIX}"))
        if len(found) > 1:
            raise NextaiError(f"{path}: holds {len(found)} GGUF files ({', '.join(p.name for p in found)}); name "
                              f"one of them in model.base_model")
        return found[0] if found else None
    return None


def resolve_base_model(name: str, cache_dir: Path | None = None) -> str:
    """A hub id or a directory transformers can load, for `model.base_model` (see the module docstring)."""
    if name == TINY_NAME:
        return str(ensure_tiny_model(cache_dir))
    expanded = os.path.expanduser(name)
    if expanded.endswith(GGUF_SUFFIX) and not Path(expanded).is_file():
        raise NextaiError(f"model.base_model: GGUF file not found: {expanded}")
    found = gguf_file(Path(expanded))
    if found is not None:
        return str(ensure_gguf_copy(found, cache_dir))
    return expanded


def file_sha256(path: Path, cache_dir: Path) -> str:
    """The file's SHA-256, remembered by (path, size, mtime) in the cache so that a large file is hashed once."""
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    index_path = cache_dir / GGUF_CACHE / "hashes.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if key not in index:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        index[key] = digest.hexdigest()
        from nextai.atomic import write_json

        write_json(index_path, index)
    return index[key]


def ensure_gguf_copy(path: Path, cache_dir: Path | None = None) -> Path:
    """The cached safetensors copy of the GGUF model at `path`, converted on first use."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    digest = file_sha256(path, cache_dir)
    target = cache_dir / GGUF_CACHE / f"{path.stem}-{digest[:16]}-v{CONVERT_VERSION}"
    if (target / "config.json").exists():
        return target
    with exclusive(cache_dir / GGUF_CACHE / ".convert.lock"):
        if (target / "config.json").exists():
            return target
        log.info("GGUF base %s: dequantizing into a safetensors copy in %s (once)", path, target)
        work = Path(tempfile.mkdtemp(prefix=".gguf-", dir=target.parent))
        try:
            convert_gguf(path, work)
            os.replace(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def convert_gguf(path: Path, directory: Path) -> None:
    """Write the GGUF model at `path` as a bf16 transformers checkpoint with its tokenizer into `directory`."""
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise NextaiError("a GGUF base needs the gguf package (pip install gguf)")
    options = {}
    try:  # transformers >= 5.25 can keep GGUF weights packed for its own kernels: nextai wants them dense
        from transformers import GgufConfig

        options["quantization_config"] = GgufConfig(gguf_file=path.name, dequantize=True)
    except ImportError:  # older releases always dequantize
        pass
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.bfloat16,
                                                     **options)
    except Exception as err:  # gguf and transformers raise many types for an unreadable or unsupported file
        raise NextaiError(f"{path}: cannot load as a GGUF model: {type(err).__name__}: {first_line(err)}") from None
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, although its weights are
    # dequantized dense tensors: clear that state and save them as they are.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "nextai_source.json").write_text(json.dumps({"gguf": str(path.resolve())}) + "\n")
