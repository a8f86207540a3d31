"""`nextai chat` as a person uses it: the real command in a pseudo-terminal, typing messages and /commands, on the
tiny model + a trained adapter; `--prompt` for one answer; SmolLM2 answering through its own chat template."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest
from after_training import SMOL_CONFIG, TINY_CONFIG

from nextai.eval.generate import Decoding, generate

pytestmark = pytest.mark.slow
QUESTION = "Give three tips for staying healthy."
SAMPLING = ["--temperature", "0", "--max_new_tokens", "8"]


def expected_reply(tiny_model, messages: list[dict]) -> str:
    model, tokenizer, prompt = tiny_model
    [completion] = generate(model, tokenizer, [prompt.ids(messages)],
                            Decoding(max_new_tokens=8, stop_token_ids=prompt.stop_token_ids()), batch_size=1)
    return completion.text


class Terminal:
    """`nextai chat` on a pseudo-terminal: what it prints, what is typed."""

    def __init__(self, args: list[str], env: dict) -> None:
        self.master, slave = pty.openpty()
        self.log = open(env["CHAT_LOG"], "w")
        self.process = subprocess.Popen([sys.executable, "-m", "nextai", "chat", *args], stdin=slave, stdout=slave,
                                        stderr=self.log, env=env, close_fds=True)
        os.close(slave)
        self.seen = ""

    def read_until(self, marker: str, timeout: float = 180) -> str:
        """Everything printed until `marker` (consumed), with the terminal's CR LF as LF."""
        deadline = time.monotonic() + timeout
        while marker not in self.seen:
            assert self.process.poll() is None or select.select([self.master], [], [], 0)[0], \
                f"chat exited ({self.process.returncode}): {self.seen[-500:]}"
            assert time.monotonic() < deadline, f"no {marker!r} after {timeout} s: {self.seen[-500:]}"
            if select.select([self.master], [], [], 0.2)[0]:
                try:
                    self.seen += os.read(self.master, 4096).decode("utf-8", errors="replace").replace("\r\n", "\n")
                except OSError:  # the other side closed
                    pass
        before, _, self.seen = self.seen.partition(marker)
        return before

    def type(self, line: str) -> str:
        """Type `line` and Enter; the output up to the next prompt, without the echoed line."""
        os.write(self.master, (line + "\n").encode())
        printed = self.read_until(">>> ")
        return printed.split(line + "\n", 1)[-1] if line + "\n" in printed else printed

    def close(self) -> int:
        try:
            return self.process.wait(timeout=30)
        finally:
            os.close(self.master)
            self.log.close()


def chat_env(nextai_cache, tmp_path) -> dict:
    return {**os.environ, "NEXTAI_CACHE_DIR": str(nextai_cache), "CHAT_LOG": str(tmp_path / "chat.log"),
            "TERM": "dumb"}


def test_interactive_chat_streams_keeps_history_and_obeys_commands(tiny_run, tiny_model, nextai_cache, tmp_path):
    terminal = Terminal(["--config", TINY_CONFIG, "--trainer.default_root_dir", str(tiny_run), *SAMPLING],
                        chat_env(nextai_cache, tmp_path))
    try:
        terminal.read_until(">>> ")
        first = expected_reply(tiny_model, [{"role": "user", "content": QUESTION}])
        reply = terminal.type(QUESTION)
        assert reply.rstrip("\n").removesuffix("[reply cut at --max_new_tokens 8]").rstrip("\n") == first
        # the second turn is asked with the first exchange as history (Alpaca: a transcript in the input)
        history = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": first}]
        second = expected_reply(tiny_model, [*history, {"role": "user", "content": "And one more?"}])
        assert second in terminal.type("And one more?")
        shown = terminal.type("/show")
        assert f"User: {QUESTION}\nAssistant: {first.strip()}" in shown and "### Instruction:" in shown
        assert "[system prompt set]" in terminal.type("/system Answer in one word.")
        assert "Answer in one word." in terminal.type("/show")
        assert "[conversation cleared]" in terminal.type("/reset")
        shown = terminal.type("/show")
        assert QUESTION not in shown and "Answer in one word." in shown  # the system prompt survives /reset
        assert "[system prompt cleared]" in terminal.type("/system -")
        again = terminal.type(QUESTION)  # a fresh conversation answers as the first one did
        assert again.rstrip("\n").removesuffix("[reply cut at --max_new_tokens 8]").rstrip("\n") == first
        assert "/reset forgets" in terminal.type("/what")
        os.write(terminal.master, b"/exit\n")
    finally:
        code = terminal.close()
    assert code == 0


def run_chat(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nextai", "chat", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def test_prompt_answers_once_with_the_reply_alone_on_stdout(tiny_run, tiny_model, nextai_cache, tmp_path):
    done = run_chat(["--config", TINY_CONFIG, "--trainer.default_root_dir", str(tiny_run), *SAMPLING,
                     "--prompt", QUESTION], chat_env(nextai_cache, tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    # The reply ends standard output; from the model's loading on, logs go to standard error (what the CLI logs
    # while it builds the trainer still goes to stdout: cli.py's log handler, not chat's).
    reply = expected_reply(tiny_model, [{"role": "user", "content": QUESTION}])
    assert ("\n" + done.stdout).endswith("\n" + reply + "\n")
    assert "prompt format: alpaca" in done.stderr and "prompt format" not in done.stdout


def test_bad_chat_flags_are_one_line_errors(tiny_run, nextai_cache, tmp_path):
    done = run_chat(["--config", TINY_CONFIG, "--trainer.default_root_dir", str(tiny_run), "--top_p", "0",
                     "--prompt", "x"], chat_env(nextai_cache, tmp_path))
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == \
        "nextai: error: chat: --top_p must be in (0, 1], got 0.0"


def test_smollm2_answers_through_its_own_chat_template(smollm2_gguf, smollm2_dir, nextai_cache, tmp_path):
    """The real instruct model alone: nextai finds its ChatML template (no BOS) and stops at <|im_end|>."""
    done = run_chat(["--config", SMOL_CONFIG, "--model.base_model", str(smollm2_gguf), "--adapter", "base",
                     "--trainer.default_root_dir", str(tmp_path / "run"), "--temperature", "0",
                     "--max_new_tokens", "8", "--prompt", "What is the capital of France?"],
                    chat_env(nextai_cache, tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Paris" in done.stdout and "<|im_end|>" not in done.stdout and "im_start" not in done.stdout
    assert "the tokenizer's chat template" in done.stderr
