"""Tests of llm_glossary.train: determinism, the loss and its normalisation, the schedule,
checkpoints and exact resume, DDP, evaluation and replies.

Every model here is tiny (dim 32, 2 layers) so the file runs in seconds.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from llm_glossary.model import Llama, LlamaConfig
from llm_glossary.train import (
    IGNORE,
    History,
    StepInfo,
    TrainConfig,
    accumulate_gradients,
    learning_rate,
    pretrain,
    resolve_device,
    token_loss_sum,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def tiny_model(vocab_size: int = 48, seed: int = 0, max_seq_len: int = 64, tie: bool = False) -> Llama:
    torch.manual_seed(seed)
    return Llama(LlamaConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                             ffn_hidden=64, max_seq_len=max_seq_len, rope_theta=10000.0,
                             tie_embeddings=tie))


def pattern_tokens(n: int = 6000, period: int = 37) -> torch.Tensor:
    """A sequence a model can learn: every token is determined by the one before it."""
    return torch.arange(n) % period


def small_config(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=8, micro_batch_size=4, seq_len=16, lr=1e-2, min_lr=1e-3,
                warmup_steps=2, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------- determinism


def test_two_runs_in_one_process_give_bit_identical_traces():
    a, b = tiny_model(), tiny_model()
    ha = pretrain(a, pattern_tokens(), small_config())
    hb = pretrain(b, pattern_tokens(), small_config())
    assert ha.loss == hb.loss  # exact float equality, step by step
    assert ha.grad_norm == hb.grad_norm
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


_SCRIPT = """
import json, sys, torch
sys.path.insert(0, {src!r})
torch.set_num_threads({threads})
from llm_glossary.model import Llama, LlamaConfig
from llm_glossary.train import TrainConfig, pretrain
torch.manual_seed(0)
m = Llama(LlamaConfig(vocab_size=48, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                      ffn_hidden=64, max_seq_len=64, rope_theta=10000.0))
cfg = TrainConfig(steps=6, batch_size=8, micro_batch_size=4, seq_len=16, lr=1e-2,
                  min_lr=1e-3, warmup_steps=2, seed=0)
h = pretrain(m, torch.arange(6000) % 37, cfg)
print(json.dumps([x.hex() for x in h.loss]))
"""


def test_a_second_process_gives_the_bit_identical_trace():
    here = pretrain(tiny_model(), pattern_tokens(), small_config())
    script = _SCRIPT.format(src=str(SRC), threads=torch.get_num_threads())
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    there = [float.fromhex(x) for x in json.loads(out.stdout)]
    assert there == here.loss


# ---------------------------------------------------------------------- learning


def test_the_loss_falls_on_a_tiny_configuration():
    history = pretrain(tiny_model(), pattern_tokens(), small_config(steps=15, warmup_steps=2, lr=2e-2))
    # uniform guessing over 48 tokens costs ln 48 ≈ 3.87 nats; the pattern is learnable
    assert history.loss[0] > 0.8 * math.log(48)
    assert history.loss[-1] < 0.3 * history.loss[0]


def test_heldout_loss_is_evaluated_every_eval_every_steps_and_at_the_end():
    history = pretrain(tiny_model(), pattern_tokens(), small_config(steps=7, eval_every=3),
                       heldout=pattern_tokens(500))
    assert history.heldout_step == [3, 6, 7]
    assert len(history.heldout_loss) == 3


def test_on_step_reports_every_step():
    infos: list[StepInfo] = []
    cfg = small_config(steps=4, eval_every=2)
    history = pretrain(tiny_model(), pattern_tokens(), cfg, heldout=pattern_tokens(300), on_step=infos.append)
    assert [i.step for i in infos] == [1, 2, 3, 4]
    assert all(i.steps == 4 for i in infos)
    assert [i.loss for i in infos] == history.loss
    assert [i.lr for i in infos] == [learning_rate(s, cfg) for s in (1, 2, 3, 4)]
    # every window is seq_len inputs; batch_size windows per step
    assert [i.tokens for i in infos] == [8 * 16 * s for s in (1, 2, 3, 4)]
    assert [i.heldout_loss is not None for i in infos] == [False, True, False, True]
    assert all(i.tokens_per_s > 0 and i.elapsed_s > 0 for i in infos)


# ---------------------------------------------------------------------- the loss


def test_token_loss_sum_matches_the_mean_times_the_count():
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    targets[0, :2] = IGNORE
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), ignore_index=-100)
    assert torch.allclose(token_loss_sum(logits, targets), expected * 8)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _unequal_micro_batches():
    """Three micro-batches with 2, 9 and 30 targets: unequal, as dialogs are."""
    g = torch.Generator().manual_seed(3)
    micro = []
    for b, T, n_targets in ((1, 4, 2), (2, 6, 9), (3, 12, 30)):
        x = torch.randint(0, 48, (b, T), generator=g)
        y = torch.randint(0, 48, (b, T), generator=g)
        flat = y.reshape(-1)
        flat[n_targets:] = IGNORE
        micro.append((x, y))
    return micro


def test_accumulation_equals_one_big_batch_on_unequal_lengths():
    micro = _unequal_micro_batches()
    n = sum(int((y != IGNORE).sum()) for _, y in micro)
    model = tiny_model()
    loss, count = accumulate_gradients(model, micro)
    accumulated = _grads(model)
    assert count == n == 41

    # the reference: one forward per micro-batch but one loss, the mean over all targets
    reference_model = tiny_model()
    total = sum(
        torch.nn.functional.cross_entropy(reference_model(x).reshape(-1, 48), y.reshape(-1),
                                          ignore_index=-100, reduction="sum")
        for x, y in micro
    )
    (total / n).backward()
    reference = _grads(reference_model)
    assert loss == pytest.approx(float(total.detach()) / n, rel=1e-6)
    for name in reference:
        assert torch.allclose(accumulated[name], reference[name], rtol=1e-5, atol=1e-7), name

    # and the test can fail: the mean of per-micro-batch means is a different gradient
    wrong_model = tiny_model()
    for x, y in micro:
        (torch.nn.functional.cross_entropy(wrong_model(x).reshape(-1, 48), y.reshape(-1)) / len(micro)).backward()
    wrong = _grads(wrong_model)
    assert not torch.allclose(wrong["lm_head.weight"], reference["lm_head.weight"], rtol=1e-3, atol=1e-6)


def test_accumulation_in_the_loop_equals_one_big_batch():
    """Pretraining with 4 micro-batches of 2 against 1 of 8: the same step."""
    a, b = tiny_model(), tiny_model()
    ha = pretrain(a, pattern_tokens(), small_config(steps=2, micro_batch_size=2))
    hb = pretrain(b, pattern_tokens(), small_config(steps=2, micro_batch_size=8))
    assert ha.loss == pytest.approx(hb.loss, rel=1e-5)
    assert ha.grad_norm == pytest.approx(hb.grad_norm, rel=1e-4)
    wa, wb = weights(a), weights(b)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


# ---------------------------------------------------------------------- schedule


def test_warmup_then_cosine_against_the_formula():
    cfg = TrainConfig(steps=50, warmup_steps=10, lr=2e-3, min_lr=2e-4)
    lrs = [learning_rate(s, cfg) for s in range(1, 51)]
    for s in range(1, 11):  # linear warm-up: equal increments reaching lr at warmup_steps
        assert lrs[s - 1] == pytest.approx(2e-3 * s / 10)
    assert lrs[9] == pytest.approx(2e-3)
    assert lrs[29] == pytest.approx((2e-3 + 2e-4) / 2)  # half-way through the decay: the mean
    assert lrs[-1] == pytest.approx(2e-4)  # the last step ends at min_lr
    decay = lrs[10:]
    assert all(x > y for x, y in zip(decay, decay[1:]))  # strictly decreasing
    # a quarter into the decay: min + (lr - min) · (1 + cos(π/4)) / 2
    assert lrs[19] == pytest.approx(2e-4 + 1.8e-3 * (1 + math.sqrt(0.5)) / 2)


def test_the_optimizer_uses_the_schedule():
    cfg = small_config(steps=5, warmup_steps=2)
    history = pretrain(tiny_model(), pattern_tokens(), cfg)
    assert history.lr == [learning_rate(s, cfg) for s in range(1, 6)]


def test_no_warmup_starts_on_the_cosine():
    cfg = TrainConfig(steps=4, warmup_steps=0, lr=1.0, min_lr=0.0)
    assert [learning_rate(s, cfg) for s in range(1, 5)] == pytest.approx(
        [(1 + math.cos(math.pi * s / 4)) / 2 for s in range(1, 5)]
    )


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(steps=0), r"TrainConfig.steps must be a positive int, got 0"),
        (dict(batch_size=6, micro_batch_size=4), r"batch_size=6 must be divisible by micro_batch_size=4"),
        (dict(micro_batch_size=True), r"micro_batch_size must be a positive int, got True"),
        (dict(seq_len=1.5), r"seq_len must be a positive int"),
        (dict(warmup_steps=20, steps=10), r"warmup_steps=20 exceeds steps=10"),
        (dict(warmup_steps=-1), r"warmup_steps must be an int >= 0"),
        (dict(lr=0.0), r"lr must be > 0"),
        (dict(lr=float("nan")), r"lr must be a finite number"),
        (dict(min_lr=1.0, lr=0.1), r"min_lr=1.0 exceeds lr=0.1"),
        (dict(weight_decay=-0.1), r"weight_decay must be a finite number >= 0"),
        (dict(grad_clip="1"), r"grad_clip must be a finite number"),
        (dict(betas=(0.9,)), r"betas must be two numbers in \[0, 1\)"),
        (dict(betas=(0.9, 1.0)), r"betas must be two numbers"),
        (dict(eval_every=-2), r"eval_every must be an int >= 0"),
        (dict(eval_max_sequences=0), r"eval_max_sequences must be a positive int"),
        (dict(long_dialogs="cut"), r"long_dialogs must be one of \('truncate', 'drop'\)"),
        (dict(train_on="user"), r"train_on must be one of \('assistant', 'all', 'last'\), got 'user'"),
    ],
)
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_config_round_trips_through_a_dict():
    cfg = small_config(betas=[0.8, 0.9])
    assert cfg.betas == (0.8, 0.9)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['stepz'\]"):
        TrainConfig.from_dict({"stepz": 3})


def test_batch_must_split_across_processes():
    with pytest.raises(ValueError, match=r"batch_size=8 is not divisible by micro_batch_size × world size = 4 × 3 = 12"):
        small_config().accumulation(3)
    assert small_config().accumulation(2) == 1


@pytest.mark.parametrize(
    "device, match",
    [
        ("gpu", r"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu'"),
        ("tpu", r"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'tpu'"),
        (3, r"device must be a string such as 'cpu' or 'cuda', got int"),
    ],
)
def test_device_errors(device, match):
    with pytest.raises(ValueError, match=match):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match=r"device 'cuda' was requested, but CUDA is not available"):
        pretrain(tiny_model(), pattern_tokens(), small_config(), device="cuda")


def test_default_device_is_the_cpu():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    "tokens, kw, match",
    [
        (torch.zeros(3, 4, dtype=torch.long), {}, r"tokens must be a 1-D integer tensor of token ids, got shape \(3, 4\)"),
        (torch.zeros(100), {}, r"tokens must be a 1-D integer tensor .* dtype torch.float32"),
        ("abc", {}, r"tokens must be a 1-D integer tensor of token ids, got str"),
        (torch.arange(100) % 37, {}, r"tokens: 100 tokens give 5 windows of seq_len=16, fewer than batch_size=8"),
        (torch.full((2000,), 48), {}, r"tokens: token id 48 is outside the vocabulary 0 .. 47"),
        (pattern_tokens(), dict(heldout=torch.arange(10)), r"heldout: 10 tokens, fewer than seq_len \+ 1 = 17"),
        (pattern_tokens(), dict(on_step=3), r"on_step must be callable or None, got int"),
        (pattern_tokens(), dict(checkpoint="dir"), r"checkpoint must be a Checkpointing or None, got str"),
    ],
)
def test_pretrain_input_errors(tokens, kw, match):
    with pytest.raises(ValueError, match=match):
        pretrain(tiny_model(), tokens, small_config(), **kw)


def test_pretrain_refuses_a_config_or_model_of_the_wrong_kind():
    with pytest.raises(ValueError, match=r"config must be a TrainConfig, got dict"):
        pretrain(tiny_model(), pattern_tokens(), {"steps": 3})
    with pytest.raises(ValueError, match=r"model must be a torch.nn.Module \(a Llama\), got str"):
        pretrain("model", pattern_tokens(), small_config())
    with pytest.raises(ValueError, match=r"seq_len=128 exceeds the model's max_seq_len=64"):
        pretrain(tiny_model(), pattern_tokens(), small_config(seq_len=128))


def test_history_round_trips_through_json():
    history = pretrain(tiny_model(), pattern_tokens(), small_config(steps=2))
    again = History.from_dict(json.loads(json.dumps(history.to_dict())))
    assert again == history


# ---------------------------------------------------------------------- checkpoints

from llm_glossary.train import Checkpointing, list_checkpoints, read_trainer_state  # noqa: E402


class Crash(Exception):
    """Stands for the process dying (the step's checkpoint, if any, was already written)."""


def crash_at(step: int, exc=Crash):
    def on_step(info: StepInfo) -> None:
        if info.step == step:
            raise exc()

    return on_step


def ckpt_config(**kw) -> TrainConfig:
    return small_config(**{"steps": 8, "warmup_steps": 2, **kw})


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    whole = tiny_model()
    expected = pretrain(whole, pattern_tokens(), ckpt_config(), checkpoint=Checkpointing(tmp_path / "a", every=3))

    first = tiny_model()
    with pytest.raises(Crash):
        pretrain(first, pattern_tokens(), ckpt_config(), checkpoint=Checkpointing(tmp_path / "b", every=3),
                 on_step=crash_at(5))
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step-00000003"]

    resumed = tiny_model(seed=123)  # other initial weights: everything comes from the checkpoint
    infos = []
    got = pretrain(resumed, pattern_tokens(), ckpt_config(),
                   checkpoint=Checkpointing(tmp_path / "b", every=3, resume=True), on_step=infos.append)
    assert [i.step for i in infos] == [4, 5, 6, 7, 8]
    assert got.loss == expected.loss  # the loss log, bit for bit
    assert got.grad_norm == expected.grad_norm and got.step == list(range(1, 9))
    w, e = weights(resumed), weights(whole)
    assert all(torch.equal(w[k], e[k]) for k in e)


def test_keyboard_interrupt_writes_the_last_completed_step_and_reraises(tmp_path):
    model = tiny_model()
    with pytest.raises(KeyboardInterrupt):
        pretrain(model, pattern_tokens(), ckpt_config(), checkpoint=Checkpointing(tmp_path, every=3),
                 on_step=crash_at(5, KeyboardInterrupt))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000005"]
    state = read_trainer_state(tmp_path / "step-00000005")
    assert state["step"] == 5 and state["history"]["step"] == [1, 2, 3, 4, 5]
    saved = Llama.load(tmp_path / "step-00000005" / "model")
    w = weights(model)
    assert all(torch.equal(v, w[k]) for k, v in weights(saved).items())

    # and resuming from it still ends exactly where an uninterrupted run ends
    whole = tiny_model()
    expected = pretrain(whole, pattern_tokens(), ckpt_config())
    again = tiny_model(seed=7)
    got = pretrain(again, pattern_tokens(), ckpt_config(), checkpoint=Checkpointing(tmp_path, every=3, resume=True))
    assert got.loss == expected.loss
    assert all(torch.equal(v, weights(whole)[k]) for k, v in weights(again).items())


def test_keep_last_and_the_final_step(tmp_path):
    pretrain(tiny_model(), pattern_tokens(), ckpt_config(steps=7), checkpoint=Checkpointing(tmp_path, every=2, keep_last=2))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000006", "step-00000007"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000006", "step-00000007"]  # nothing left over


def test_checkpoint_files_load_without_running_code(tmp_path):
    from safetensors import safe_open

    pretrain(tiny_model(), pattern_tokens(), ckpt_config(steps=2), checkpoint=Checkpointing(tmp_path, every=2))
    folder = tmp_path / "step-00000002"
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == ["model/config.json", "model/model.safetensors", "optimizer.safetensors",
                     "rng.safetensors", "trainer.json"]
    for name in ("optimizer.safetensors", "rng.safetensors", "model/model.safetensors"):
        with safe_open(str(folder / name), framework="pt") as f:  # the safetensors library itself
            assert len(list(f.keys())) > 0
    state = json.loads((folder / "trainer.json").read_text())
    assert state["data_position"] == {"epoch": 0, "batch": 2, "next_step": 3, "examples_seen": 16}
    assert state["scheduler"]["step"] == 2
    with safe_open(str(folder / "optimizer.safetensors"), framework="pt") as f:
        names = set(f.keys())
    assert "state/0/exp_avg" in names and "state/0/exp_avg_sq" in names


def test_a_half_written_checkpoint_is_never_picked_up(tmp_path, monkeypatch):
    import llm_glossary.train as train

    pretrain(tiny_model(), pattern_tokens(), ckpt_config(steps=4), checkpoint=Checkpointing(tmp_path, every=2))
    # what a kill could leave: a temporary folder, and a step folder without trainer.json
    (tmp_path / ".step-00000006.tmp-abc").mkdir()
    (tmp_path / ".step-00000006.tmp-abc" / "trainer.json").write_text("{")
    (tmp_path / "step-00000008").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000004"]

    # a save that fails half-way leaves no step folder behind
    files = train._ckpt()
    real = files.save_safetensors

    def failing(tensors, path, metadata=None):
        if Path(path).name == "rng.safetensors":
            raise OSError("disk full")
        return real(tensors, path, metadata)

    monkeypatch.setattr(files, "save_safetensors", failing)
    with pytest.raises(OSError, match="disk full"):
        pretrain(tiny_model(), pattern_tokens(), ckpt_config(steps=4), checkpoint=Checkpointing(tmp_path / "c", every=1))
    assert list_checkpoints(tmp_path / "c") == []
    assert not any(p.name.startswith("step-") for p in (tmp_path / "c").iterdir())


def test_resume_refuses_another_configuration_or_data(tmp_path):
    pretrain(tiny_model(), pattern_tokens(), ckpt_config(steps=2), checkpoint=Checkpointing(tmp_path, every=2))
    with pytest.raises(ValueError, match=r"cannot resume exactly: the configuration differs in lr \(saved 0.01, now 0.02\)"):
        pretrain(tiny_model(), pattern_tokens(), ckpt_config(steps=2, lr=2e-2),
                 checkpoint=Checkpointing(tmp_path, every=2, resume=True))
    with pytest.raises(ValueError, match=r"cannot resume exactly: the training data differ"):
        pretrain(tiny_model(), pattern_tokens(period=31), ckpt_config(steps=2),
                 checkpoint=Checkpointing(tmp_path, every=2, resume=True))
    with pytest.raises(ValueError, match=r"already holds checkpoints \(newest: step-00000002\); pass resume=True"):
        pretrain(tiny_model(), pattern_tokens(), ckpt_config(steps=2), checkpoint=Checkpointing(tmp_path, every=2))


def test_resume_restores_the_random_generators(tmp_path):
    import random

    first = tiny_model()
    random.seed(123)
    torch.manual_seed(5)
    expected_py, expected_torch = random.getstate(), torch.get_rng_state()  # training draws from neither
    with pytest.raises(Crash):
        pretrain(first, pattern_tokens(), ckpt_config(), checkpoint=Checkpointing(tmp_path, every=2),
                 on_step=crash_at(3))
    model = tiny_model()
    random.seed(999)
    torch.manual_seed(999)
    with pytest.raises(Crash):  # stop right after the restore (step 3 is the first step run)
        pretrain(model, pattern_tokens(), ckpt_config(), checkpoint=Checkpointing(tmp_path, every=2, resume=True),
                 on_step=crash_at(3))
    assert random.getstate() == expected_py
    assert torch.equal(torch.get_rng_state(), expected_torch)


def test_resume_without_a_checkpoint_starts_from_scratch(tmp_path):
    a = pretrain(tiny_model(), pattern_tokens(), ckpt_config(steps=3),
                 checkpoint=Checkpointing(tmp_path / "none", every=5, resume=True))
    b = pretrain(tiny_model(), pattern_tokens(), ckpt_config(steps=3))
    assert a.loss == b.loss
    assert [p.name for p in list_checkpoints(tmp_path / "none")] == ["step-00000003"]


@pytest.mark.parametrize(
    "args, match",
    [
        (dict(dir=3, every=2), r"Checkpointing dir must be a path, got int"),
        (dict(dir="x", every=0), r"Checkpointing every must be a positive int, got 0"),
        (dict(dir="x", every=2, keep_last=0), r"Checkpointing keep_last must be a positive int, got 0"),
        (dict(dir="x", every=2, resume="yes"), r"Checkpointing resume must be True or False, got 'yes'"),
    ],
)
def test_checkpointing_errors(args, match):
    with pytest.raises(ValueError, match=match):
        Checkpointing(**args)


def test_read_trainer_state_errors(tmp_path):
    with pytest.raises(ValueError, match=r"trainer.json: no such file"):
        read_trainer_state(tmp_path)
    (tmp_path / "trainer.json").write_text("{\"format\": \"other\"}")
    with pytest.raises(ValueError, match=r"not a training checkpoint"):
        read_trainer_state(tmp_path)
    (tmp_path / "trainer.json").write_text("{")
    with pytest.raises(ValueError, match=r"not valid JSON"):
        read_trainer_state(tmp_path)


# ---------------------------------------------------------------------- dialogs

from llm_glossary.dialog import Dialog, Message, collate, encode_dialog, encode_prompt  # noqa: E402
from llm_glossary.tokenizer import CHAT_SPECIALS, ByteFallbackBPE  # noqa: E402
from llm_glossary.train import Evaluation, Reply, evaluate, finetune, reply, shift_batch  # noqa: E402

WORDS = "red green blue cat dog sun moon tree rock bird fish star".split()


def tiny_tokenizer() -> ByteFallbackBPE:
    text = " ".join(WORDS) + " say twice again user assistant system be brief 한국어"
    return ByteFallbackBPE.train([text] * 3, vocab_size=330).with_special_tokens(CHAT_SPECIALS)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def make_dialogs(n: int = 16, start: int = 0) -> list[Dialog]:
    """Echo dialogs of unequal lengths: the reply repeats the user's words."""
    out = []
    for k in range(start, start + n):
        words = [WORDS[(k * 5 + j) % len(WORDS)] for j in range(1 + k % 4)]
        messages = [Message("user", "say " + " ".join(words)), Message("assistant", " ".join(words))]
        if k % 3 == 0:
            messages = [Message("system", "be brief")] + messages
        out.append(Dialog(id=k, messages=tuple(messages), source="test"))
    return out


def chat_model(tok, seed: int = 0, max_seq_len: int = 64, tie: bool = False) -> Llama:
    return tiny_model(vocab_size=tok.vocab_size, seed=seed, max_seq_len=max_seq_len, tie=tie)


def sft_config(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=4, micro_batch_size=2, seq_len=60, lr=1e-2, min_lr=1e-3, warmup_steps=1)
    base.update(kw)
    return TrainConfig(**base)


def test_finetune_loss_falls(tok):
    # (determinism of finetune: see the bit-identical resume test below)
    ha = finetune(chat_model(tok), make_dialogs(), tok, sft_config(steps=12, lr=2e-2))
    assert ha.kind == "finetune" and ha.n_examples == 16 and ha.n_truncated == ha.n_dropped == 0
    assert ha.loss[-1] < 0.5 * ha.loss[0]


def test_finetune_counts_assistant_targets_with_their_eot(tok):
    dialogs = make_dialogs(4)
    history = finetune(chat_model(tok), dialogs, tok, sft_config(steps=1))
    # the targets of the step are the assistant tokens (content + <|eot_id|>) of the 4 dialogs
    expected = sum(sum(l != -100 for l in encode_dialog(d, tok)[1]) for d in dialogs)
    assert history.targets == [expected]
    # and each dialog's last target is its <|eot_id|>
    ids, labels = encode_dialog(dialogs[0], tok)
    assert labels[-1] == tok.eot_id == ids[-1]


def _grad_and_logit_grad(model, inputs, targets):
    model.zero_grad(set_to_none=True)
    logits = model(inputs)
    logits.retain_grad()
    (token_loss_sum(logits, targets) / int((targets != IGNORE).sum())).backward()
    return _grads(model), logits.grad


def test_the_mask_reaches_the_loss(tok):
    dialogs = make_dialogs(3)
    examples = [encode_dialog(d, tok) for d in dialogs]
    inputs, targets = shift_batch(collate(examples, tok.pad_id))
    model = chat_model(tok)
    grads, logit_grad = _grad_and_logit_grad(model, inputs, targets)
    row_has_gradient = logit_grad.abs().sum(dim=-1) > 0  # (B, T - 1)
    assert torch.equal(row_has_gradient, targets != IGNORE)  # only target positions feed the loss
    # the position before each dialog's last token predicts its <|eot_id|>, and is trained
    for b, (ids, _) in enumerate(examples):
        assert int(targets[b, len(ids) - 2]) == tok.eot_id and bool(row_has_gradient[b, len(ids) - 2])

    # changing the tokens under masked labels at the pads changes nothing, bit for bit
    padded = inputs.clone()
    padded[targets == IGNORE] = torch.where(padded[targets == IGNORE] == tok.pad_id, 7, padded[targets == IGNORE])
    assert not torch.equal(padded, inputs)
    same, _ = _grad_and_logit_grad(model, padded, targets)
    assert all(torch.equal(same[k], grads[k]) for k in grads)

    # changing a target (the first dialog's <|eot_id|>) changes the gradient
    changed = targets.clone()
    changed[0, len(examples[0][0]) - 2] = tok.pad_id
    other, _ = _grad_and_logit_grad(model, inputs, changed)
    assert not torch.allclose(other["lm_head.weight"], grads["lm_head.weight"])


def test_finetune_accumulation_equals_one_big_batch(tok):
    """Dialogs of unequal lengths: 4 micro-batches of 1 against 1 of 4."""
    a, b = chat_model(tok), chat_model(tok)
    ha = finetune(a, make_dialogs(), tok, sft_config(steps=2, micro_batch_size=1))
    hb = finetune(b, make_dialogs(), tok, sft_config(steps=2, micro_batch_size=4))
    assert ha.targets == hb.targets
    assert ha.loss == pytest.approx(hb.loss, rel=1e-5)
    assert ha.grad_norm == pytest.approx(hb.grad_norm, rel=1e-4)  # the gradient's scale, not only its sign
    # Adam divides by sqrt(v): a gradient entry near zero turns float noise into a step of
    # up to lr, so the weights agree to a fraction of one step (lr = 1e-2), not to 1e-7
    wa, wb = weights(a), weights(b)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)


def test_long_dialogs_are_truncated_by_whole_exchanges_or_dropped(tok):
    long_turn = Message("assistant", " ".join(WORDS * 4))
    system = Message("system", "be brief")
    exchanges = [Message("user", "say red"), Message("assistant", "red"),
                 Message("user", "say " + " ".join(WORDS)), Message("assistant", " ".join(WORDS))]
    multi = Dialog(id="multi", messages=(system, *exchanges, Message("user", "say cat"), Message("assistant", "cat")))
    hopeless = Dialog(id="hopeless", messages=(Message("user", "say it"), long_turn))
    seq_len = len(encode_dialog(Dialog(id="x", messages=(system, *exchanges[2:], *multi.messages[-2:])), tok)[0]) - 1
    assert len(encode_dialog(multi, tok)[0]) > seq_len + 1
    dialogs = [multi, hopeless, *make_dialogs(4)]
    model = chat_model(tok, max_seq_len=seq_len)
    h = finetune(model, dialogs, tok, sft_config(steps=1, seq_len=seq_len))
    assert (h.n_examples, h.n_truncated, h.n_dropped) == (5, 1, 1)
    h = finetune(chat_model(tok, max_seq_len=seq_len), dialogs, tok, sft_config(steps=1, seq_len=seq_len, long_dialogs="drop"))
    assert (h.n_examples, h.n_truncated, h.n_dropped) == (4, 0, 2)

    from llm_glossary.train import _truncate_left

    ids, labels = _truncate_left(multi, tok, seq_len + 1, "assistant")
    # the first exchange went; the system message stayed
    assert (ids, labels) == encode_dialog(Dialog(id="multi", messages=(system, *exchanges[2:], *multi.messages[-2:])), tok)


def test_finetune_resumes_bit_identically_across_epochs(tmp_path, tok):
    cfg = sft_config(steps=9, batch_size=4, micro_batch_size=2)  # 12 dialogs: 3 steps per epoch
    whole = chat_model(tok, tie=True)  # tied embeddings, as in the walkthrough's recipes
    expected = finetune(whole, make_dialogs(12), tok, cfg)
    with pytest.raises(Crash):
        finetune(chat_model(tok, tie=True), make_dialogs(12), tok, cfg,
                 checkpoint=Checkpointing(tmp_path, every=4), on_step=crash_at(7))
    resumed = chat_model(tok, seed=3, tie=True)
    got = finetune(resumed, make_dialogs(12), tok, cfg, checkpoint=Checkpointing(tmp_path, every=4, resume=True))
    assert got.loss == expected.loss
    assert all(torch.equal(v, weights(whole)[k]) for k, v in weights(resumed).items())
    state = read_trainer_state(tmp_path / "step-00000009")
    assert state["data_position"]["epoch"] == 3 and state["kind"] == "finetune"


def test_evaluate_matches_a_direct_computation(tok):
    model = chat_model(tok)
    dialogs = make_dialogs(5)
    result = evaluate(model, dialogs, tok, batch_size=2)
    assert isinstance(result, Evaluation)
    total, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for d in dialogs:  # one dialog at a time, no padding: the plain definition
            ids, labels = encode_dialog(d, tok)
            logits = model(torch.tensor([ids[:-1]]))[0]
            y = torch.tensor(labels[1:])
            keep = y != -100
            total += float(torch.nn.functional.cross_entropy(logits[keep], y[keep], reduction="sum"))
            correct += int((logits[keep].argmax(-1) == y[keep]).sum())
            count += int(keep.sum())
    assert result.n_tokens == count
    assert result.loss == pytest.approx(total / count, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)
    assert result.accuracy == correct / count


def test_heldout_loss_of_finetune_is_evaluate(tok):
    model = chat_model(tok)
    h = finetune(model, make_dialogs(), tok, sft_config(steps=2), heldout=make_dialogs(4, start=20))
    assert h.heldout_step == [2]
    assert h.heldout_loss[0] == pytest.approx(evaluate(model, make_dialogs(4, start=20), tok).loss, rel=1e-5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, t: finetune(m, "dialogs.json", t, sft_config()), r"dialogs must be a list of Dialog, got str"),
        (lambda m, t: finetune(m, [1, 2], t, sft_config()), r"dialogs\[0\] must be a Dialog, got int"),
        (lambda m, t: finetune(m, make_dialogs(2), t, sft_config()), r"need at least batch_size=4 training sequences, got 2"),
        (lambda m, t: finetune(tiny_model(vocab_size=40), make_dialogs(), t, sft_config()),
         r"the tokenizer has \d+ pieces but the model's vocab_size is 40"),
        (lambda m, t: finetune(m, make_dialogs(), t, sft_config(seq_len=4)), r"no dialog fits seq_len=4 \(dropped 16 of 16\)"),
        (lambda m, t: finetune(m, make_dialogs(), t, sft_config(), heldout=[3]), r"dialogs\[0\] must be a Dialog, got int"),
        (lambda m, t: evaluate(m, make_dialogs(), t, batch_size=0), r"batch_size must be a positive int, got 0"),
        (lambda m, t: evaluate(m, {"a": 1}, t), r"dialogs must be a list of Dialog, got dict"),
        (lambda m, t: evaluate(m, make_dialogs(), t, seq_len=0), r"seq_len must be a positive int, got 0"),
        (lambda m, t: evaluate(m, make_dialogs(), t, device="gpu"), r"device must be 'cpu', 'cuda', 'cuda:N' or 'mps'"),
        (lambda m, t: reply(m, t, "hello"), r"messages must be a list of Message, got str"),
        (lambda m, t: reply(m, t, []), r"messages is empty: it must end with a user message"),
        (lambda m, t: reply(m, t, [{"role": "user", "content": "hi"}]), r"messages\[0\] must be a Message, got dict"),
        (lambda m, t: reply(m, t, [Message("user", "hi"), Message("assistant", "yo")]),
         r"the last message must be from the user, got role 'assistant'"),
        (lambda m, t: reply(m, t, [Message("user", "hi")], max_new_tokens=-1), r"max_new_tokens must be an int >= 0"),
        (lambda m, t: reply(m, t, [Message("user", "hi")], temperature=-1.0), r"temperature must be a finite number >= 0"),
        (lambda m, t: reply(m, t, [Message("user", "hi")], max_new_tokens=60),
         r"the prompt has \d+ tokens; with max_new_tokens=60 that exceeds the model's max_seq_len=64"),
        (lambda m, t: reply(m, t, [Message("user", "hi")], on_token="print"), r"on_token must be callable or None, got str"),
    ],
)
def test_dialog_input_errors(tok, call, match):
    with pytest.raises(ValueError, match=match):
        call(chat_model(tok), tok)


# ---------------------------------------------------------------------- replies


class Scripted(torch.nn.Module):
    """A stand-in model whose next token is read from a script (to build any output)."""

    def __init__(self, vocab_size: int, script: list[int], max_seq_len: int = 256) -> None:
        super().__init__()
        self.config = LlamaConfig(vocab_size=vocab_size, dim=8, n_layers=1, n_heads=2, max_seq_len=max_seq_len)
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.script, self.calls = list(script), 0

    def new_caches(self, batch: int, max_len: int | None = None) -> list:
        return []

    def forward(self, idx, *, caches=None, last_only=False):
        logits = torch.full((idx.shape[0], 1, self.config.vocab_size), -10.0)
        token = self.script[self.calls] if self.calls < len(self.script) else self.script[-1]
        logits[:, :, token] = 10.0
        self.calls += 1
        return logits


def text_ids(tok, text: str) -> list[int]:
    return tok.encode(text)


def test_reply_ends_on_eot(tok):
    ids = text_ids(tok, "red cat")
    r = reply(Scripted(tok.vocab_size, [*ids, tok.eot_id]), tok, [Message("user", "say red cat")])
    assert r == Reply(text="red cat", ids=[*ids, tok.eot_id], ended=True, role_leak=False)


def test_reply_that_hits_the_limit_has_not_ended(tok):
    ids = text_ids(tok, "red cat dog sun")
    r = reply(Scripted(tok.vocab_size, ids + [tok.eot_id]), tok, [Message("user", "hi")], max_new_tokens=2)
    assert r.ids == ids[:2] and not r.ended and not r.role_leak


@pytest.mark.parametrize("special", ["<|start_header_id|>", "<|end_header_id|>", "<|begin_of_text|>", "<|pad|>", "</s>"])
def test_reply_flags_a_role_leak(tok, special):
    ids = text_ids(tok, "red")
    script = [*ids, tok.piece_to_id(special), *text_ids(tok, "user"), tok.eot_id]
    r = reply(Scripted(tok.vocab_size, script), tok, [Message("user", "hi")])
    assert r.role_leak and r.ended
    assert special not in r.text  # special tokens are never text


def test_reply_streams_whole_characters(tok):
    # "한" is not a piece here: three byte pieces, which must reach on_token as one character
    chars = [tok.piece_to_id(f"<0x{b:02X}>") for b in "한".encode("utf-8")]
    assert all(tok.id_to_piece(i).startswith("<0x") for i in chars)
    script = [*text_ids(tok, "red"), *chars, *text_ids(tok, "cat"), tok.eot_id]  # "▁cat": " cat"
    pieces: list[str] = []
    r = reply(Scripted(tok.vocab_size, script), tok, [Message("user", "hi")], on_token=pieces.append)
    assert "".join(pieces) == r.text == "red한 cat"
    assert "한" in pieces  # arrived whole
    assert all("\ufffd" not in p for p in pieces)


def test_reply_of_a_real_model_is_greedy_and_reproducible(tok):
    model = chat_model(tok, max_seq_len=128)
    messages = [Message("user", "say red")]
    a = reply(model, tok, messages, max_new_tokens=8)
    b = reply(model, tok, messages, max_new_tokens=8)
    assert a == b and 1 <= len(a.ids) <= 8
    # greedy: the same tokens as the model's own generate()
    prompt = torch.tensor([encode_prompt(messages, tok)])
    out = model.generate(prompt, 8, stop_tokens=[tok.eot_id])[0, prompt.shape[1]:].tolist()
    assert a.ids == out[: len(a.ids)]
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    s1 = reply(model, tok, messages, max_new_tokens=8, temperature=1.0, generator=g1)
    s2 = reply(model, tok, messages, max_new_tokens=8, temperature=1.0, generator=g2)
    assert s1 == s2


# ---------------------------------------------------------------------- DDP


def ddp_config(**kw) -> TrainConfig:
    return sft_config(**{"steps": 3, "batch_size": 4, "micro_batch_size": 1, **kw})


def _ddp_worker(rank: int, world_size: int, folder: str) -> None:
    import torch.distributed as dist

    from llm_glossary.checkpoint import save_safetensors

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    try:
        tok = tiny_tokenizer()
        model = chat_model(tok)
        h = finetune(model, make_dialogs(), tok, ddp_config(),
                     checkpoint=Checkpointing(Path(folder) / "ckpt", every=2))
        p_model = tiny_model()
        hp = pretrain(p_model, pattern_tokens(), small_config(steps=3, micro_batch_size=2))
        if rank == 0:
            save_safetensors(weights(model), Path(folder) / "sft.safetensors")
            save_safetensors(weights(p_model), Path(folder) / "pretrain.safetensors")
            (Path(folder) / "histories.json").write_text(json.dumps([h.to_dict(), hp.to_dict()]))
            import shutil

            shutil.rmtree(Path(folder) / "ckpt" / "step-00000003")  # as if killed before step 3's save
        dist.barrier()
        # resume under DDP: every process reads step 2, and step 3 comes out the same
        again = chat_model(tok, seed=9)
        h2 = finetune(again, make_dialogs(), tok, ddp_config(),
                      checkpoint=Checkpointing(Path(folder) / "ckpt", every=2, resume=True))
        same = h2.loss == h.loss and all(torch.equal(v, weights(model)[k]) for k, v in weights(again).items())
        (Path(folder) / f"resumed-{rank}.json").write_text(json.dumps(same))
    finally:
        dist.destroy_process_group()


def test_two_ddp_processes_match_one_process(tmp_path, tok):
    import torch.multiprocessing as mp

    from llm_glossary.checkpoint import load_safetensors

    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)

    # one process, the same global batch (4 sequences), 2 micro-batches of 2 instead of 2 × 2 × 1
    single = chat_model(tok)
    h = finetune(single, make_dialogs(), tok, ddp_config(micro_batch_size=2))
    single_p = tiny_model()
    hp = pretrain(single_p, pattern_tokens(), small_config(steps=3, micro_batch_size=4))

    ddp_h, ddp_hp = (History.from_dict(d) for d in json.loads((tmp_path / "histories.json").read_text()))
    assert ddp_h.targets == h.targets  # the same dialogs in every step
    assert ddp_h.loss == pytest.approx(h.loss, rel=1e-5)
    assert ddp_h.grad_norm == pytest.approx(h.grad_norm, rel=1e-4)  # ∇ normalised by the global count
    assert ddp_hp.loss == pytest.approx(hp.loss, rel=1e-5)
    for name, want in (("sft", weights(single)), ("pretrain", weights(single_p))):
        got = load_safetensors(tmp_path / f"{name}.safetensors")
        for k in want:
            assert torch.allclose(got[k], want[k], atol=1e-4), (name, k)
    # only process 0 wrote checkpoints, and they are complete
    assert [p.name for p in list_checkpoints(tmp_path / "ckpt")] == ["step-00000002", "step-00000003"]
    assert read_trainer_state(tmp_path / "ckpt" / "step-00000003")["world_size"] == 2
    # and a resumed DDP run ends bit-identical to the uninterrupted DDP run, on both processes
    assert [json.loads((tmp_path / f"resumed-{r}.json").read_text()) for r in (0, 1)] == [True, True]


# ---------------------------------------------------------------------- data order


def test_each_epoch_is_a_permutation_and_process_shares_make_the_global_batch():
    from llm_glossary.train import _Order

    cfg = small_config(batch_size=8, micro_batch_size=2)
    one = _Order(50, cfg, 1, 0)  # 50 examples: 6 steps per epoch, 2 left out
    two = [_Order(50, cfg, 2, r) for r in (0, 1)]
    seen = []
    for step in range(1, 7):
        epoch, batch = one.indices(step)
        assert epoch == 0 and len(batch) == 8
        shares = [o.indices(step)[1] for o in two]
        assert sorted(shares[0] + shares[1]) == sorted(batch)  # the same global batch
        seen += batch
    assert len(set(seen)) == 48  # no example twice in an epoch
    assert one.indices(7)[0] == 1 and one.indices(7)[1] != one.indices(1)[1]  # a new order


def test_pretraining_windows_are_next_token_pairs():
    from llm_glossary.train import _Windows

    tokens = pattern_tokens(400)
    windows = _Windows(tokens, 16, seed=0)
    offsets = {windows.offset(e) for e in range(8)}
    assert len(offsets) > 1 and all(0 <= o < 16 for o in offsets)  # epochs start at other places
    for epoch in range(3):
        inputs, targets = windows.batch(list(range(windows.n)), epoch)  # every window fits
        assert torch.equal(targets[:, :-1], inputs[:, 1:])  # the target is the next token
        assert torch.equal(targets, (inputs + 1) % 37)  # (the pattern's rule)


def test_a_diverging_run_stops_with_one_message_before_it_checkpoints_nan(tmp_path):
    # lr 1e30: the first loss is finite, the update is not; the held-out loss and the next
    # gradient norm are inf/nan and must stop the run as "diverged", not as a JSON error
    # while the checkpoint's history is written.
    config = ckpt_config(lr=1e30, min_lr=1e30, eval_every=1)
    with pytest.raises(RuntimeError, match="training diverged .*lower lr than 1e\\+30"):
        pretrain(tiny_model(), pattern_tokens(), config, heldout=pattern_tokens(600),
                 checkpoint=Checkpointing(tmp_path / "ck", every=1))


# ---------------------------------------------------------------------- efficiency options


def test_logits_only_at_targets_give_the_full_loss_and_gradient(tok, monkeypatch):
    """The output head applied at the target positions only: the same loss and gradient as
    the head at every position with -100 elsewhere (the pads and the prompts)."""
    import llm_glossary.train as T

    examples = [encode_dialog(d, tok) for d in make_dialogs(5)]
    micro = [shift_batch(collate(examples, tok.pad_id))]
    model = chat_model(tok)
    assert T._selects_logits(model)
    loss_sel, n_sel = accumulate_gradients(model, micro)
    sel = _grads(model)
    model.zero_grad(set_to_none=True)
    monkeypatch.setattr(T, "_selects_logits", lambda net: False)
    loss_full, n_full = accumulate_gradients(model, micro)
    full = _grads(model)
    assert n_sel == n_full == sum(sum(x != IGNORE for x in labels[1:]) for _, labels in examples)
    assert loss_sel == pytest.approx(loss_full, rel=1e-6)
    for name in full:
        torch.testing.assert_close(sel[name], full[name], rtol=1e-5, atol=1e-7, msg=name)


def test_the_order_without_grouping_is_distributed_samplers():
    from torch.utils.data import DistributedSampler

    from llm_glossary.train import _Order

    cfg = small_config(batch_size=8, micro_batch_size=2, seed=3)
    for world in (1, 2):
        for rank in range(world):
            order = _Order(50, cfg, world, rank)
            sampler = DistributedSampler(range(50), num_replicas=world, rank=rank, shuffle=True,
                                         seed=3, drop_last=True)
            for epoch in range(3):
                sampler.set_epoch(epoch)
                reference = list(sampler)
                per = 8 // world
                for b in range(order.steps_per_epoch):
                    step = epoch * order.steps_per_epoch + b + 1
                    assert order.indices(step) == (epoch, reference[b * per : (b + 1) * per])


def test_grouping_by_length_keeps_each_epoch_a_permutation_and_pads_less():
    from llm_glossary.train import _Order

    lengths = [10 + (k * 37) % 90 for k in range(200)]  # 10 .. 99, shuffled by the multiplier
    plain = _Order(200, small_config(batch_size=8, micro_batch_size=8), 1, 0, lengths)
    grouped = _Order(200, small_config(batch_size=8, micro_batch_size=8, group_by_length=5), 1, 0, lengths)
    waste = {}
    for name, order in (("plain", plain), ("grouped", grouped)):
        seen, padded = [], 0
        for step in range(1, order.steps_per_epoch + 1):
            epoch, batch = order.indices(step)
            assert epoch == 0 and len(batch) == 8
            seen += batch
            padded += sum(max(lengths[i] for i in batch) - lengths[i] for i in batch)
        assert sorted(seen) == sorted(set(seen)) and len(seen) == 200  # every example once
        waste[name] = padded
    assert waste["grouped"] < waste["plain"] / 3
    # a grouped batch comes from one run of 5 batches of the shuffled order, sorted: its
    # lengths are a contiguous slice of that run's sorted lengths
    epoch_batches = grouped._epoch_batches(0)
    assert [len(b) for b in epoch_batches] == [8] * 25
    assert all(lengths[b[i]] <= lengths[b[i + 1]] for b in epoch_batches for i in range(7))
    # and the batches are shuffled: not in order of their lengths
    firsts = [lengths[b[0]] for b in epoch_batches]
    assert firsts != sorted(firsts)
    # two processes take interleaved shares of the same global batch
    two = [_Order(200, small_config(batch_size=8, micro_batch_size=4, group_by_length=5), 2, r, lengths)
           for r in (0, 1)]
    for step in (1, 7, 26):
        _, batch = grouped.indices(step)
        assert [two[0].indices(step)[1], two[1].indices(step)[1]] == [batch[0::2], batch[1::2]]


def test_embedding_lr_scale_multiplies_the_embeddings_first_step():
    # Adam's first step moves every weight with a gradient by lr · g / (|g| + eps) ≈ ±lr
    # (no warm-up: the step is at lr; no decay, no clipping).
    model = tiny_model()
    before = weights(model)
    config = small_config(steps=1, warmup_steps=0, batch_size=8, micro_batch_size=8, lr=1e-3, min_lr=1e-3,
                          weight_decay=0.0, grad_clip=0.0, embedding_lr_scale=10.0)
    pretrain(model, pattern_tokens(), config)
    after = weights(model)
    emb = (after["embed_tokens.weight"] - before["embed_tokens.weight"]).abs()
    moved = emb[emb > 0]
    assert moved.numel() > 0 and torch.allclose(moved.max(), torch.tensor(1e-2), rtol=1e-3)
    for name in ("layers.0.mlp.down_proj.weight", "lm_head.weight"):
        step = (after[name] - before[name]).abs()
        assert torch.allclose(step.max(), torch.tensor(1e-3), rtol=1e-3), name
    with pytest.raises(ValueError, match=r"embedding_lr_scale must be > 0, got 0"):
        small_config(embedding_lr_scale=0)


def test_without_eot_targets_the_eot_is_never_a_target(tok):
    dialogs = make_dialogs(4)
    for d in dialogs:
        ids, labels = encode_dialog(d, tok, train_eot=False)
        with_eot = encode_dialog(d, tok)[1]
        assert tok.eot_id not in labels
        # the same targets otherwise
        assert [i for i, x in enumerate(labels) if x != IGNORE] == [
            i for i, x in enumerate(with_eot) if x != IGNORE and x != tok.eot_id]
    history = finetune(chat_model(tok), dialogs, tok, sft_config(steps=1, train_eot=False))
    expected = sum(sum(x not in (IGNORE, tok.eot_id) for x in encode_dialog(d, tok)[1]) for d in dialogs)
    assert history.targets == [expected]
    with pytest.raises(ValueError, match=r"train_eot must be True or False, got 'no'"):
        encode_dialog(dialogs[0], tok, train_eot="no")
    with pytest.raises(ValueError, match=r"TrainConfig.train_eot must be True or False, got 0"):
        sft_config(train_eot=0)


def test_stop_at_is_exactly_the_first_steps_of_the_full_run(tok):
    full_model, short_model = chat_model(tok), chat_model(tok)
    snapshots = {}

    def keep(info):
        if info.step == 3:
            snapshots[3] = weights(full_model)

    full = finetune(full_model, make_dialogs(), tok, sft_config(steps=6), on_step=keep)
    short = finetune(short_model, make_dialogs(), tok, sft_config(steps=6), stop_at=3)
    assert short.step == [1, 2, 3] and short.loss == full.loss[:3] and short.lr == full.lr[:3]
    got = weights(short_model)
    assert all(torch.equal(got[k], snapshots[3][k]) for k in got)
    with pytest.raises(ValueError, match=r"stop_at=7 exceeds TrainConfig.steps=6"):
        finetune(chat_model(tok), make_dialogs(), tok, sft_config(steps=6), stop_at=7)
