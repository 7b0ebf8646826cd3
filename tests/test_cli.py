"""The llm-glossary command, end to end: in-process through ``main([...])`` and as real
subprocesses (``python -m llm_glossary``, SIGKILL / SIGINT, a pseudo-terminal, torchrun).

Everything trains the "tiny" recipe for a few steps; one pretrained base and one fine-tuned
folder are shared by the module.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
import pty
import random
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import torch

from llm_glossary import cli
from llm_glossary.cli import main

ROOT = Path(__file__).resolve().parents[1]
GOOD = ROOT / "examples" / "my-dialogs.json"
BROKEN = ROOT / "examples" / "broken-dialogs.json"
SFT_STEPS = 8
# The interruption tests signal a child after its step 3; the run must still be going then, so
# they train longer than a step takes to log and a signal to arrive.
INTERRUPT_STEPS = 120
TIME_FIELDS = {"tokens_per_s", "elapsed_s"}  # wall-clock: the only fields that may differ


def run_main(*args) -> tuple[int, str, str]:
    """main([...]) in this process, with stdout and stderr captured (neither is a terminal).

    It runs on one thread, as the child processes do (child_env): a matrix product may sum
    in another order on another number of threads, and the exact-resume tests compare
    weights bit for bit between this process and a child.
    """
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        torch.set_num_threads(threads)
    return code, out.getvalue(), err.getvalue()


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("LLM_GLOSSARY_DEBUG", None)
    return env


def command(*args) -> list[str]:
    return [sys.executable, "-m", "llm_glossary", *map(str, args)]


def run_child(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), input=stdin, capture_output=True, text=True, env=child_env(),
                          timeout=300)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def log_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def without_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in records]


def last_logged_step(path: Path) -> int:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(line)["step"]
    return 0


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def base(work) -> Path:
    """A tiny pretrained model (2 steps on a slice of the shipped corpus)."""
    from llm_glossary.corpus import corpus_lines

    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(corpus_lines("train")[:120]) + "\n", encoding="utf-8")
    out = work / "base"
    code, stdout, stderr = run_main("pretrain", "--config", "tiny", "--corpus", corpus, "--out", out,
                                    "--steps", 2, "--device", "cpu")
    assert code == 0, stderr
    return out


def sft_args(base: Path, out: Path, *extra, steps: int = SFT_STEPS) -> list:
    return ["sft", "--config", "tiny", "--base", base, "--data", GOOD, "--out", out, "--steps", steps,
            "--batch-size", 4, "--save-every", 2, "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def trained(base, work) -> dict:
    """The uninterrupted reference fine-tune, in-process, with --log-jsonl."""
    out, log = work / "sft", work / "sft.jsonl"
    code, stdout, stderr = run_main(*sft_args(base, out, "--log-jsonl", log))
    assert code == 0, stderr
    return {"out": out, "log": log, "stdout": stdout, "stderr": stderr}


@pytest.fixture(scope="module")
def long_trained(base, work) -> dict:
    """The uninterrupted reference of the interruption tests (INTERRUPT_STEPS steps)."""
    out, log = work / "sft-long", work / "sft-long.jsonl"
    code, stdout, stderr = run_main(*sft_args(base, out, "--log-jsonl", log, steps=INTERRUPT_STEPS))
    assert code == 0, stderr
    return {"out": out, "log": log}


# ---------------------------------------------------------------------------- usage


@pytest.mark.parametrize("sub", ["validate", "pretrain", "sft", "chat", "eval", "export"])
def test_every_subcommand_has_help(sub):
    code, stdout, _ = run_main(sub, "--help")
    assert code == 0
    assert stdout.startswith(f"usage: llm-glossary {sub}")
    assert "내 대화 데이터로 미세조정하기" in stdout  # the Korean guide is linked


def test_console_script_entry_point_is_main():
    import importlib

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    module, _, attr = scripts["llm-glossary"].partition(":")
    assert getattr(importlib.import_module(module), attr) is main


def test_top_level_help_lists_the_subcommands():
    code, stdout, _ = run_main("--help")
    assert code == 0
    for sub in ("validate", "pretrain", "sft", "chat", "eval", "export"):
        assert re.search(rf"^\s+{sub}\s", stdout, re.M), sub


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "required: SUBCOMMAND"),
        (["train"], "invalid choice: 'train'"),
        (["validate"], "required: FILE"),
        (["sft", "--data", GOOD, "--out", "x", "--steps", "0"], "--steps: expected a whole number > 0, got '0'"),
        (["sft", "--data", GOOD, "--out", "x", "--batch-size", "two"], "--batch-size: expected a whole number"),
        (["sft", "--data", GOOD], "required: --out"),
        (["chat", "x", "--temperature", "-1"], "--temperature: expected a finite number >= 0, got '-1'"),
        (["validate", GOOD, "--role-map", "bot"], "--role-map: expected NAME=ROLE"),
        (["validate", GOOD, "--role-map", "bot=robot"], "ROLE must be one of system, user, assistant"),
        (["export", "x"], "required: --to"),
    ],
)
def test_usage_errors_exit_2_with_one_message(args, message):
    code, stdout, stderr = run_main(*args)
    assert code == cli.EXIT_USAGE
    assert message in stderr
    assert stderr.startswith("usage: ")
    assert "Traceback" not in stderr


def test_unknown_config_and_device_are_usage_errors(base, tmp_path):
    code, _, stderr = run_main(*sft_args(base, tmp_path / "a")[:-2], "--config", "huge")
    assert code == cli.EXIT_USAGE
    assert "--config huge" in stderr and "tiny" in stderr  # lists the known recipes
    code, _, stderr = run_main(*sft_args(base, tmp_path / "b")[:-2], "--device", "toaster")
    assert code == cli.EXIT_USAGE
    assert "--device 'toaster'" in stderr


# ---------------------------------------------------------------------------- wrong input: exit 1


def test_validate_broken_file_lists_every_problem(tmp_path):
    code, stdout, stderr = run_main("validate", BROKEN)
    assert code == cli.EXIT_INPUT
    lines = stdout.strip().splitlines()
    problems, summary = lines[:-1], lines[-1]
    n = int(re.fullmatch(rf"{re.escape(str(BROKEN))}: (\d+) problems?", summary).group(1))
    assert n == len(problems) >= 3  # three broken dialogs, each with at least one problem
    for line in problems:  # every problem names the file and a place in it
        assert line.startswith(f"{BROKEN}:"), line
        assert re.search(r":\d+:\d+|line \d+, column \d+|dialogs\[\d+\]", line), line
    assert any("bot" in line for line in problems)  # the unknown speaker is named
    assert "1 of 1 file with problems" in stderr


def test_validate_valid_file_prints_a_summary(tmp_path):
    from llm_glossary.dialog import chat_tokenizer, encode_dialog, load_dialogs

    raw = json.loads(GOOD.read_text(encoding="utf-8"))["dialogs"]
    turns = sum(len(d["conversation"]) for d in raw)
    tokenizer = chat_tokenizer()
    tokens = sum(len(encode_dialog(d, tokenizer)[0]) for d in load_dialogs(GOOD))
    code, stdout, stderr = run_main("validate", GOOD)
    assert code == 0, stdout + stderr
    assert stdout.startswith(f"{GOOD}: ok: {len(raw)} dialogs, {turns} turns, {tokens} tokens (")


def test_validate_counts_tokens_with_a_model_folders_tokenizer(trained, tmp_path):
    from llm_glossary.dialog import encode_dialog, load_dialogs

    tokenizer = cli._load_tokenizer(trained["out"])
    tokens = sum(len(encode_dialog(d, tokenizer)[0]) for d in load_dialogs(GOOD))
    code, stdout, _ = run_main("validate", GOOD, "--tokenizer", trained["out"])
    assert code == 0
    assert f" {tokens} tokens (" in stdout
    code, _, stderr = run_main("validate", GOOD, "--tokenizer", tmp_path / "none")
    assert code == cli.EXIT_INPUT and "--tokenizer" in one_error_line(stderr)


def test_validate_reports_every_file(tmp_path):
    code, stdout, _ = run_main("validate", GOOD, BROKEN, tmp_path / "missing.json")
    assert code == cli.EXIT_INPUT
    assert f"{GOOD}: ok:" in stdout
    assert re.search(rf"^{re.escape(str(BROKEN))}: \d+ problems?$", stdout, re.M)
    assert f"{tmp_path / 'missing.json'}: no such file" in stdout


def test_validate_role_map_reads_other_speaker_names(tmp_path):
    data = {"dialogs": [{"id": "a", "conversation": [{"speaker": "human", "utterance": "hi"},
                                                      {"speaker": "bot", "utterance": "hello"}]}]}
    path = tmp_path / "renamed.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert run_main("validate", path)[0] == cli.EXIT_INPUT
    code, stdout, _ = run_main("validate", path, "--role-map", "human=user", "--role-map", "bot=assistant")
    assert code == 0
    assert ": ok: 1 dialogs, 2 turns" in stdout


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_wrong_files_and_folders_give_one_line_and_exit_1(base, trained, tmp_path):
    missing = tmp_path / "nope"
    a_file = tmp_path / "file.txt"
    a_file.write_text("hello\n", encoding="utf-8")
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    cases = [
        (["chat", missing, "--prompt", "hi"], f"{missing}: no such folder"),
        (["chat", a_file, "--prompt", "hi"], f"{a_file}: is a file"),
        (["chat", tmp_path, "--prompt", "hi"], f"{tmp_path}: not a model folder"),
        (["chat", unfinished, "--prompt", "hi"], "--resume"),
        (["eval", trained["out"], "--data", missing], f"--data {missing}: no such file"),
        (["export", missing, "--to", tmp_path / "hf"], f"{missing}: no such folder"),
        (["export", trained["out"], "--to", a_file], f"--to {a_file}: is a file"),
        (["sft", "--data", missing, "--base", base, "--out", tmp_path / "o", "--config", "tiny"], f"--data {missing}"),
        (["sft", "--data", BROKEN, "--base", base, "--out", tmp_path / "o", "--config", "tiny"], str(BROKEN)),
        (["sft", "--data", GOOD, "--base", missing, "--out", tmp_path / "o", "--config", "tiny"], f"{missing}: no such folder"),
        (["sft", "--data", GOOD, "--base", base, "--out", a_file, "--config", "tiny"], f"--out {a_file}: is a file"),
        (["sft", "--data", GOOD, "--base", base, "--out", trained["out"], "--config", "tiny"], "--resume"),
        (["pretrain", "--corpus", missing, "--out", tmp_path / "p", "--config", "tiny"], f"--corpus {missing}: no such file or folder"),
        (["sft", "--data", GOOD, "--base", base, "--out", tmp_path / "o", "--config", "tiny", "--batch-size", "6",
          "--micro-batch-size", "4"], "--micro-batch-size 4 must divide"),
        (["sft", "--data", GOOD, "--base", base, "--out", tmp_path / "o", "--config", "walkthrough", "--steps", "1"],
         "--config walkthrough: sequences of 320 tokens are longer than the model of --base takes (max_seq_len 192)"),
        (["sft", "--data", GOOD, "--base", base, "--out", tmp_path / "o", "--config", "tiny", "--steps", "2",
          "--warmup-steps", "3"], "--warmup-steps 3 exceeds the 2 steps"),
    ]
    for args, expected in cases:
        code, stdout, stderr = run_main(*args)
        assert code == cli.EXIT_INPUT, (args, stderr)
        line = one_error_line(stderr)
        assert line.startswith(f"llm-glossary {args[0]}: error: "), line
        assert expected in line, (args, line)
    assert not (tmp_path / "o").exists()  # nothing was written for a refused run


def test_resume_with_other_settings_is_refused(base, trained):
    code, _, stderr = run_main(*sft_args(base, trained["out"], "--resume", "--lr", "0.5"))
    assert code == cli.EXIT_INPUT
    assert "--lr differs from the run" in one_error_line(stderr)


def test_no_traceback_from_a_real_process(tmp_path):
    result = run_child("chat", tmp_path / "missing", "--prompt", "hi")
    assert result.returncode == 1
    assert one_error_line(result.stderr) == f"llm-glossary chat: error: {tmp_path / 'missing'}: no such folder"


def test_out_of_memory_says_what_to_change(base, tmp_path, monkeypatch):
    from llm_glossary import train

    def no_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore details")

    monkeypatch.setattr(train, "finetune", no_memory)
    code, _, stderr = run_main(*sft_args(base, tmp_path / "o"))
    assert code == cli.EXIT_INPUT
    line = one_error_line(stderr)
    assert "out of memory" in line and "--micro-batch-size" in line and "--config" in line

    def diverged(*args, **kwargs):
        raise RuntimeError("finetune: the loss is nan at step 3: training diverged (try a lower lr than 0.003)")

    monkeypatch.setattr(train, "finetune", diverged)
    code, _, stderr = run_main(*sft_args(base, tmp_path / "d"))
    assert code == cli.EXIT_INPUT
    assert "training diverged" in (line := one_error_line(stderr)) and "--lr" in line

    def too_big(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(cli, "_build_model", too_big)
    code, _, stderr = run_main("pretrain", "--config", "tiny", "--out", tmp_path / "p", "--steps", 1)
    assert code == cli.EXIT_INPUT
    assert "out of memory" in one_error_line(stderr)


# ---------------------------------------------------------------------------- training


def test_sft_writes_a_complete_model_folder(trained):
    from llm_glossary.model import Llama

    out = trained["out"]
    for name in cli.MODEL_FILES + ("run.json",):
        assert (out / name).is_file(), name
    model = Llama.load(out)
    tokenizer = cli._load_tokenizer(out)
    assert model.config.vocab_size == len(tokenizer)
    assert sorted(weights(out)) == sorted(model.hf_state_dict())
    assert any((out / "checkpoints").iterdir())
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["command"] == "sft" and run["steps"] == SFT_STEPS and run["batch_size"] == 4


def test_sft_log_jsonl_and_summary(trained):
    records = log_records(trained["log"])
    assert [r["step"] for r in records] == list(range(1, SFT_STEPS + 1))
    assert all(r["steps"] == SFT_STEPS and math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    tokens = [r["tokens"] for r in records]
    assert all(b > a for a, b in zip(tokens, tokens[1:]))  # cumulative input tokens
    summary = trained["stdout"]
    assert f"step {SFT_STEPS}/{SFT_STEPS}" in summary
    assert f"{records[-1]['tokens']:,} tokens" in summary
    assert f"final loss {records[-1]['loss']:.4f}" in summary
    assert f"model written to {trained['out']}" in summary
    assert "loss=" not in trained["stderr"]  # no progress bar when stderr is not a terminal


def test_progress_bar_on_a_terminal(base, tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 40 rows, 160 columns
    proc = subprocess.Popen(command(*sft_args(base, tmp_path / "tty")[:-4], "--steps", 3, "--device", "cpu"),
                            stdin=slave, stdout=slave, stderr=slave, env=child_env())
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=60) == 0
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert re.search(r"sft: +100%.*3/3 \[[0-9:]+<[0-9:]+", screen), screen  # bar with elapsed<ETA
    assert "loss=" in screen and "tok/s=" in screen
    assert "model written to" in screen


def test_sft_default_base_is_the_walkthrough_pretrained_model(base, tmp_path, monkeypatch):
    """Without --base, sft starts from walkthrough.run().pretrained and leaves that model as it was."""
    import types

    import llm_glossary
    from llm_glossary.model import Llama

    pretrained, tokenizer = cli.load_model_folder(base)
    before = {k: v.clone() for k, v in pretrained.state_dict().items()}
    calls = []

    def run(**kwargs):
        calls.append(kwargs)
        return types.SimpleNamespace(pretrained=pretrained, tokenizer=tokenizer)

    fake = types.ModuleType("llm_glossary.walkthrough")
    fake.run = run
    monkeypatch.setitem(sys.modules, "llm_glossary.walkthrough", fake)
    monkeypatch.setattr(llm_glossary, "walkthrough", fake, raising=False)
    out = tmp_path / "default-base"
    code, _, stderr = run_main("sft", "--config", "tiny", "--data", GOOD, "--out", out, "--steps", 2,
                               "--device", "cpu")
    assert code == 0, stderr
    assert len(calls) == 1
    assert all(torch.equal(before[k], v) for k, v in pretrained.state_dict().items())  # a copy was trained
    with_base = tmp_path / "explicit-base"
    assert run_main("sft", "--config", "tiny", "--data", GOOD, "--out", with_base, "--steps", 2, "--base", base,
                    "--device", "cpu")[0] == 0
    a, b = weights(out), weights(with_base)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same start, the same run
    assert Llama.load(out).config == pretrained.config


# ---------------------------------------------------------------------------- exact resume


def test_sigkill_then_resume_is_bit_identical(base, long_trained, tmp_path):
    """Kill -9 at an arbitrary step after a checkpoint exists; --resume ends where the uninterrupted run did."""
    out, log = tmp_path / "killed", tmp_path / "killed.jsonl"
    kill_at = random.Random().randint(3, 8)  # checkpoints every 2 steps: one exists by then
    proc = subprocess.Popen(command(*sft_args(base, out, "--log-jsonl", log, steps=INTERRUPT_STEPS)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env())
    deadline = time.monotonic() + 300
    while last_logged_step(log) < kill_at and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert proc.poll() is None, f"the run ended before step {kill_at}: {proc.stderr.read().decode()}"
    proc.kill()  # SIGKILL: no handler runs
    assert proc.wait() == -signal.SIGKILL
    proc.stderr.close()
    killed_at = last_logged_step(log)
    assert kill_at <= killed_at < INTERRUPT_STEPS, killed_at
    assert not (out / "model.safetensors").exists()
    code, stdout, stderr = run_main(*sft_args(base, out, "--log-jsonl", log, "--resume", steps=INTERRUPT_STEPS))
    assert code == 0, stderr
    ref, got = weights(long_trained["out"]), weights(out)
    assert sorted(ref) == sorted(got)
    for name in ref:
        assert torch.equal(ref[name], got[name]), f"{name} differs after kill at step {killed_at}"
    assert without_time(log_records(log)) == without_time(log_records(long_trained["log"]))


def test_sigint_writes_a_checkpoint_and_exits_130(base, long_trained, tmp_path):
    out, log = tmp_path / "interrupted", tmp_path / "interrupted.jsonl"
    args = sft_args(base, out, "--log-jsonl", log, "--save-every", 1000, steps=INTERRUPT_STEPS)
    # A shell that starts a command in the background (`make test &`) ignores SIGINT for it,
    # and the ignored signal is inherited: the child would never see Ctrl-C. Give it back.
    proc = subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while last_logged_step(log) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_INTERRUPTED, stderr
    line = one_error_line(stderr)
    assert line.startswith("llm-glossary sft: interrupted: stopped after step ") and "--resume" in line
    stopped = int(re.search(r"after step (\d+)", line).group(1))
    assert 3 <= stopped < INTERRUPT_STEPS
    # --save-every 1000 means no scheduled checkpoint yet: the one there is the interrupt's
    saved = [p.name for p in (out / "checkpoints").iterdir()]
    assert len(saved) == 1 and re.search(rf"\b0*{stopped}\b", saved[0]), saved
    code, _, stderr = run_main(*args, "--resume")
    assert code == 0, stderr
    ref, got = weights(long_trained["out"]), weights(out)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert without_time(log_records(log)) == without_time(log_records(long_trained["log"]))


# ---------------------------------------------------------------------------- chat, eval


def test_chat_prompt_is_a_multi_turn_conversation(trained):
    from llm_glossary import train
    from llm_glossary.dialog import Message

    model, tokenizer = cli.load_model_folder(trained["out"])
    first = train.reply(model, tokenizer, [Message("user", "When does the library open?")], max_new_tokens=12)
    second = train.reply(model, tokenizer, [Message("user", "When does the library open?"),
                                            Message("assistant", first.text), Message("user", "Thanks!")],
                         max_new_tokens=12)
    class Writes(io.StringIO):
        def __init__(self):
            super().__init__()
            self.pieces = []

        def write(self, text):
            self.pieces.append(text)
            return super().write(text)

    out = Writes()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["chat", str(trained["out"]), "--prompt", "When does the library open?",
                     "--prompt", "Thanks!", "--max-new-tokens", "12", "--device", "cpu"])
    assert code == 0
    assert out.getvalue() == f"{first.text}\n{second.text}\n"
    # streamed: the first reply arrives piece by piece, as its tokens are generated
    n_pieces = len(first.ids) - int(first.ended)
    streamed, length = [], 0
    for piece in out.pieces:
        if length >= len(first.text):
            break
        streamed.append(piece)
        length += len(piece)
    assert "".join(streamed) == first.text
    assert n_pieces >= 2, first  # a reply of several tokens, so streaming shows
    assert 1 < len(streamed) <= n_pieces  # one write per token (a character of several byte tokens: one)


def test_interactive_chat_reset_and_exit(trained):
    from llm_glossary import train
    from llm_glossary.dialog import Message

    model, tokenizer = cli.load_model_folder(trained["out"])
    fresh = train.reply(model, tokenizer, [Message("user", "Hi")], max_new_tokens=8).text
    result = run_child("chat", trained["out"], "--max-new-tokens", 8, "--device", "cpu",
                       stdin="Hi\nHow many books?\n/reset\nHi\n/exit\nnever read\n")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "[conversation reset]" in result.stdout
    before, after = result.stdout.split("[conversation reset]\n")
    assert before.startswith(fresh + "\n")  # the first turn of a conversation
    assert after == fresh + "\n"  # after /reset the same first turn gets the same reply; /exit stops


def test_eval_prints_the_walkthrough_metrics(trained):
    from llm_glossary import train
    from llm_glossary.dialog import load_dialogs

    model, tokenizer = cli.load_model_folder(trained["out"])
    dialogs = load_dialogs(GOOD)
    expected = train.evaluate(model, dialogs, tokenizer)
    code, stdout, _ = run_main("eval", trained["out"], "--data", GOOD, "--json", "--max-new-tokens", 6,
                               "--max-replies", 4, "--device", "cpu")
    assert code == 0
    metrics = json.loads(stdout)
    assert metrics["loss"] == pytest.approx(expected.loss)
    assert metrics["perplexity"] == pytest.approx(math.exp(expected.loss))
    assert metrics["accuracy"] == pytest.approx(expected.accuracy)
    # the first 4 assistant turns of the file, replied to one by one with train.reply
    prompts = [(list(d.messages[:i]), m.content) for d in dialogs for i, m in enumerate(d.messages)
               if m.role == "assistant" and d.messages[i - 1].role == "user"][:4]
    replies = [train.reply(model, tokenizer, p, max_new_tokens=6) for p, _ in prompts]
    assert metrics["n_replies"] == 4
    assert metrics["end_rate"] == pytest.approx(sum(r.ended for r in replies) / 4)
    assert metrics["role_leaks"] == sum(r.role_leak for r in replies)
    code, stdout, _ = run_main("eval", trained["out"], "--data", GOOD, "--max-replies", 0, "--device", "cpu")
    assert code == 0 and f"loss         {expected.loss:.4f}" in stdout


# ---------------------------------------------------------------------------- export


def test_export_loads_in_transformers_and_generates_the_same_tokens(trained, tmp_path):
    transformers = pytest.importorskip("transformers")
    from llm_glossary import train
    from llm_glossary.dialog import Message, encode_prompt

    hf_dir = tmp_path / "hf"
    code, stdout, stderr = run_main("export", trained["out"], "--to", hf_dir)
    assert code == 0, stderr
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in hf_dir.iterdir()}
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary folder left
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    model, tokenizer = cli.load_model_folder(trained["out"])
    for conversation in (
        [Message("user", "When does the library open?")],
        [Message("system", "Answer briefly."), Message("user", "도서관 몇 시에 열어요?"),
         Message("assistant", "오전 9시요."), Message("user", "고마워요!")],
    ):
        hf_ids = hf_tok.apply_chat_template([{"role": m.role, "content": m.content} for m in conversation],
                                            add_generation_prompt=True, tokenize=True)
        if not isinstance(hf_ids, list):  # a BatchEncoding in newer transformers
            hf_ids = list(hf_ids["input_ids"])
        prompt = encode_prompt(conversation, tokenizer)
        assert hf_ids == prompt
        with torch.no_grad():
            ours_logits = model(torch.tensor([prompt]))
            hf_logits = hf_model(torch.tensor([prompt])).logits
        torch.testing.assert_close(hf_logits, ours_logits, rtol=1e-4, atol=1e-4)
        ours = train.reply(model, tokenizer, conversation, max_new_tokens=16)
        with torch.no_grad():
            generated = hf_model.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False)
        assert generated[0, len(prompt):].tolist() == ours.ids
    # an existing folder is kept unless --force
    code, _, stderr = run_main("export", trained["out"], "--to", hf_dir)
    assert code == cli.EXIT_INPUT and "--force" in one_error_line(stderr)
    assert run_main("export", trained["out"], "--to", hf_dir, "--force")[0] == 0


# ---------------------------------------------------------------------------- torchrun


def test_torchrun_two_processes_match_one(base, trained, tmp_path):
    """2 CPU processes (gloo) with the same global batch train the same weights as 1 process."""
    out, log = tmp_path / "ddp", tmp_path / "ddp.jsonl"
    args = sft_args(base, out, "--log-jsonl", log)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "llm_glossary", *map(str, args)],
        capture_output=True, text=True, env=child_env(), timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("model written to") == 1  # only rank 0 prints
    ref, got = weights(trained["out"]), weights(out)
    assert sorted(ref) == sorted(got)
    for name in ref:
        # The processes sum the gradients in another order than one process does. Adam divides
        # each update by the gradient's running size, so where a gradient is near zero that
        # rounding can move a weight visibly: 99 % of the weights agree to 1e-5, none differs
        # by more than a fraction of one step (lr = 2e-2).
        diff = (got[name] - ref[name]).abs()
        close = diff <= 1e-5 + 1e-4 * ref[name].abs()
        assert close.float().mean() >= 0.99, (name, int((~close).sum()), diff.numel())
        assert float(diff.max()) < 1e-3, (name, float(diff.max()))
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["processes"] == 2
    records, reference = log_records(log), log_records(trained["log"])  # rank 0's log only: one line a step
    assert [r["step"] for r in records] == [r["step"] for r in reference]
    assert [r["tokens"] for r in records] == [r["tokens"] for r in reference]  # over both processes
    assert [r["loss"] for r in records] == pytest.approx([r["loss"] for r in reference], rel=1e-4)
