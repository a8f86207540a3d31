"""`nextai push`: what would go to the Hub (offline `--dry_run`), the card a folder gets, and one-line errors; no
network is reached (tests run with HF_HUB_OFFLINE=1)."""

import pytest
from after_training import TINY_CONFIG

from nextai.main import main

pytestmark = pytest.mark.slow


def push(run, capsys, *extra: str) -> tuple[int, str, str]:
    try:
        main(["push", "--config", TINY_CONFIG, "--trainer.default_root_dir", str(run), *extra])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_lists_the_adapter_and_the_card_it_would_get(tiny_run, capsys):
    blank = (tiny_run / "adapter" / "README.md").read_text()  # peft's own card: every section blank
    assert "[More Information Needed]" in blank
    code, out, _ = push(tiny_run, capsys, "--repo_id", "someone/tiny-nextai", "--dry_run", "true")
    assert code == 0
    lines = out[out.index("would upload"):].strip().splitlines()  # after the CLI's own log lines
    assert lines[0].startswith("would upload 4 files") and "https://huggingface.co/someone/tiny-nextai (private" \
        in lines[0]
    listed = [line.split()[0] for line in lines[1:]]
    assert listed == ["README.md", "adapter_config.json", "adapter_model.safetensors", "prompt_format.json"]
    assert "model card, written by nextai before the upload" in lines[1]
    size = (tiny_run / "adapter" / "adapter_model.safetensors").stat().st_size
    assert f"adapter_model.safetensors  {size:,} bytes" in out
    assert (tiny_run / "adapter" / "README.md").read_text() == blank  # a dry run writes nothing


def test_an_offline_push_fails_in_one_line_and_leaves_the_folder_alone(tiny_run, capsys):
    before = {p.name: p.read_bytes() for p in (tiny_run / "adapter").iterdir()}
    code, _, err = push(tiny_run, capsys, "--repo_id", "someone/tiny-nextai")
    assert code == 2
    [line] = [line for line in err.splitlines() if line.startswith("nextai: error:")]
    assert line.startswith("nextai: error: push: upload to someone/tiny-nextai failed (HF_HUB_OFFLINE is set)")
    assert {p.name: p.read_bytes() for p in (tiny_run / "adapter").iterdir()} == before


@pytest.mark.parametrize("arguments, message", [
    (["--repo_id", "not a repo id!", "--dry_run", "true"], "is not a hub repo id"),
    ([], "push needs --repo_id user/name"),
    (["--repo_id", "a/b", "--folder", "no-such-export", "--dry_run", "true"], "no folder"),
])
def test_bad_push_arguments_are_one_line_errors(tiny_run, capsys, arguments, message):
    code, _, err = push(tiny_run, capsys, *arguments)
    assert code == 2 and message in err.strip().splitlines()[-1]
