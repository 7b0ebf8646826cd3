"""The dialog fine-tune walkthrough, end to end: the one function the pages call.

``run()`` tokenizes the shipped corpus, pretrains the tiny Llama on it, fine-tunes it on the
shipped dialogs, evaluates both models on the held-out dialogs and replies greedily to
held-out prompts. It is thin: every step is a function of ``llm_glossary.train``,
``llm_glossary.dialog`` and ``llm_glossary.dialog_data`` that a reader can open.

The result is memoized in the process (the Korean and English pages share one run) and
cached on disk, so ``mkdocs serve`` rebuilds in seconds after a prose edit:

- folder: ``$LLM_GLOSSARY_CACHE_DIR`` (default ``~/.cache/llm-glossary``), one subfolder
  ``walkthrough-<key>`` per run, where the key hashes everything that can change the result
  (the source of the modules involved, the corpus and dialog files, the glossary, the
  recipe, the torch version and the device);
- ``LLM_GLOSSARY_NO_CACHE=1`` turns the disk cache off (the run trains every time).

Models are stored as safetensors (``Llama.save``), everything else as JSON; nothing is
pickled.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import torch

from llm_glossary._checks import positive_int
from llm_glossary.dialog import (
    Dialog,
    Message,
    chat_tokenizer,
    encode_dialog,
    encode_prompt,
)
from llm_glossary.dialog_data import glossary_entries, shipped_dialogs
from llm_glossary.model import Llama, LlamaConfig
from llm_glossary.recipes import Recipe, recipe as get_recipe
from llm_glossary.train import (
    History,
    StepInfo,
    evaluate,
    finetune,
    heldout_token_loss,
    pretrain,
    resolve_device,
)

__all__ = [
    "Walkthrough",
    "Sample",
    "run",
    "cache_dir",
    "cache_key",
    "eval_prompts",
    "greedy_replies",
    "stop_rate",
]

MAX_NEW_TOKENS = 96
# the misconceptions' fine-tunes: the first this many steps of the walkthrough's schedule
# (all of it for a recipe with fewer steps)
VARIANT_STEPS = 32


def variant_steps(rec: Recipe) -> int:
    """Fine-tuning steps of the misconceptions' runs for a recipe."""
    return min(VARIANT_STEPS, rec.finetune.steps)
_MODULES = (
    "model",
    "attention",
    "position",
    "norm",
    "tokenizer",
    "corpus",
    "dialog",
    "dialog_data",
    "train",
    "recipes",
    "walkthrough",
    "checkpoint",
    "_checks",
)


@dataclass
class Sample:
    """One held-out prompt and the greedy reply to it."""

    kind: str  # "everyday", "question" (a glossary question) or "follow-up"
    lang: str
    messages: list[
        tuple[str, str]
    ]  # (role, content), ending with the user's turn
    expected: (
        str | None
    )  # the reference answer (the definition or the fixed follow-up answer)
    text: str = ""
    ended: bool = False
    role_leak: bool = False
    n_tokens: int = 0

    @property
    def correct(self) -> bool:
        return (
            self.expected is not None
            and self.ended
            and " ".join(self.text.split()) == " ".join(self.expected.split())
        )


@dataclass
class Walkthrough:
    """What ``run`` returns: the tokenizer, both models, the loss curves and the metrics."""

    tokenizer: object
    pretrained: Llama
    model: Llama
    history: dict[str, History]
    metrics: dict
    samples: list[Sample] = field(default_factory=list)
    before: list[Sample] = field(default_factory=list)
    recipe: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    cached: bool = False
    early: Llama | None = None  # after variant_steps(recipe) fine-tuning steps


# ------------------------------------------------------------------ prompts and greedy replies


def eval_prompts(
    split: str = "heldout", *, everyday_per_lang: int = 16
) -> list[Sample]:
    """The fixed held-out prompts the walkthrough replies to.

    Every glossary question (the first turn of each held-out glossary dialog), every
    follow-up (the first exchange, then the follow-up) and the first user turn of
    ``everyday_per_lang`` everyday dialogs per language, taken at even intervals (a fixed
    deterministic sample: greedy decoding of every held-out prompt would cost more than
    training).
    """
    out: list[Sample] = []
    for lang in ("ko", "en"):
        every = shipped_dialogs(split, kind="everyday", lang=lang)
        step = max(1, len(every) // everyday_per_lang)
        for d in every[::step][:everyday_per_lang]:
            first = (
                d.messages[0] if d.messages[0].role == "user" else d.messages[1]
            )
            prefix = list(d.messages[: d.messages.index(first) + 1])
            out.append(
                Sample(
                    "everyday",
                    lang,
                    [(m.role, m.content) for m in prefix],
                    None,
                )
            )
        for d in shipped_dialogs(split, kind="glossary", lang=lang):
            m = d.messages
            out.append(
                Sample(
                    "question", lang, [(m[0].role, m[0].content)], m[1].content
                )
            )
            if len(m) >= 4:
                out.append(
                    Sample(
                        "follow-up",
                        lang,
                        [(x.role, x.content) for x in m[:3]],
                        m[3].content,
                    )
                )
    return out


@torch.no_grad()
def greedy_replies(
    model: Llama,
    tokenizer,
    samples: list[Sample],
    *,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 64,
) -> list[Sample]:
    """Greedy replies to every sample, filled in place (and returned).

    Prompts are decoded ``batch_size`` at a time, padded on the left to the longest
    (``Llama.generate(attention_mask=...)``: no token attends to padding and positions count
    only real tokens, so each row is continued as it would be alone). A prompt too long for
    ``max_new_tokens`` more tokens within the model's context gets what room is left, decoded
    with the prompts of its own length. A reply ends at the first <|eot_id|>; it leaks a role
    when it produces any other special token before that (as ``train.reply``).
    """
    positive_int(batch_size, "batch_size")
    eot = tokenizer.eot_id
    specials = {tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id}
    specials.update(tokenizer.piece_to_id(t) for t in tokenizer.special_tokens)
    limit = model.config.max_seq_len
    groups: dict[int, list[tuple[Sample, list[int]]]] = {}  # by the room each prompt has
    for s in samples:
        ids = encode_prompt([Message(r, c) for r, c in s.messages], tokenizer)
        n = min(max_new_tokens, limit - len(ids))
        if n > 0:  # else no room left in the context: the reply cannot start
            groups.setdefault(n, []).append((s, ids))
    device = model.lm_head.weight.device
    for n, group in groups.items():
        group.sort(key=lambda row: len(row[1]))  # pad little
        for i in range(0, len(group), batch_size):
            rows = group[i : i + batch_size]
            T = len(rows[-1][1])
            idx = torch.full((len(rows), T), tokenizer.pad_id, dtype=torch.long)
            real = torch.zeros((len(rows), T), dtype=torch.bool)
            for j, (_, ids) in enumerate(rows):
                idx[j, T - len(ids) :] = torch.tensor(ids)
                real[j, T - len(ids) :] = True
            out = model.generate(
                idx.to(device), n, stop_tokens=[eot], attention_mask=real.to(device)
            )[:, T:].tolist()
            for (s, _), new in zip(rows, out):
                if eot in new:
                    new = new[: new.index(eot) + 1]
                s.ended = bool(new) and new[-1] == eot
                s.role_leak = any(i in specials and i != eot for i in new)
                s.n_tokens = len(new)
                s.text = tokenizer.decode([i for i in new if i != eot])
    return samples


@torch.no_grad()
def teacher_forced_exact(
    model: Llama, tokenizer, samples: list[Sample], *, batch_size: int = 32
) -> list[bool]:
    """Whether greedy decoding would reproduce each sample's expected answer, token for token.

    Greedy decoding is deterministic: it produces the expected ids followed by <|eot_id|>
    exactly when, fed the prompt and the expected ids so far, the model's most likely next
    token is the expected one at every position. So one batched forward pass per
    ``batch_size`` samples checks what ``len(answer)`` decoding steps would. The check is
    strict: a reply that spells the same text with other pieces counts as wrong.
    """
    rows = []
    for s in samples:
        messages = [Message(r, c) for r, c in s.messages]
        prompt = encode_prompt(messages, tokenizer)
        # the answer's ids as training encodes them: a message's first piece carries no
        # leading "▁" (it follows the header's blank line), unlike tokenizer.encode(answer)
        ids, _ = encode_dialog(
            [*messages, Message("assistant", s.expected)], tokenizer
        )
        assert ids[: len(prompt)] == prompt  # the ids end with the answer's <|eot_id|>
        # the positions whose next token belongs to the answer
        rows.append((ids, range(len(prompt) - 1, len(ids) - 1)))
    preds = _predictions_at(model, rows, tokenizer.pad_id, batch_size)
    return [
        bool((pred == torch.tensor(ids[at.start + 1 :])).all())
        for (ids, at), pred in zip(rows, preds)
    ]


def _predictions_at(
    model: Llama, rows: list, pad_id: int, batch_size: int
) -> list[torch.Tensor]:
    """The model's most likely next token at chosen positions of many id sequences.

    ``rows`` holds ``(ids, positions)`` pairs, positions in increasing order. Sequences of
    similar length share a right-padded batch of ``batch_size`` and one forward pass with the
    output head only at the chosen positions. Returns, per row, the predicted ids (CPU).
    """
    device = model.lm_head.weight.device
    out: list[torch.Tensor] = [torch.empty(0, dtype=torch.long)] * len(rows)
    order = sorted(range(len(rows)), key=lambda k: len(rows[k][0]))  # pad little
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        T = max(len(rows[k][0]) for k in chunk)
        idx = torch.full((len(chunk), T), pad_id, dtype=torch.long)
        at = torch.zeros((len(chunk), T), dtype=torch.bool)
        for j, k in enumerate(chunk):
            ids, positions = rows[k]
            idx[j, : len(ids)] = torch.tensor(ids)
            at[j, list(positions)] = True
        pred = model(idx.to(device), logits_at=at.to(device)).argmax(-1).cpu()
        n = 0  # pred holds the chosen positions row by row
        for j, k in enumerate(chunk):
            m = int(at[j].sum())
            out[k] = pred[n : n + m]
            n += m
    return out


@torch.no_grad()
def stop_rate(
    model: Llama, tokenizer, dialogs: list[Dialog], *, batch_size: int = 32
) -> float:
    """Share of the assistant turns in ``dialogs`` after which <|eot_id|> is the model's most
    likely next token, fed the dialog up to the last token of that turn's text.

    Teacher forcing, as :func:`teacher_forced_exact`: one forward pass per ``batch_size``
    dialogs asks, of every assistant turn at once, whether the model has learned to end its
    turn after a complete answer, where greedy decoding would pay up to
    ``MAX_NEW_TOKENS`` steps per prompt to find out. Turns that end beyond the model's
    context are not counted.
    """
    eot, limit = tokenizer.eot_id, model.config.max_seq_len
    rows = []
    for d in dialogs:
        ids, labels = encode_dialog(d, tokenizer)  # the assistant's turns end in a target eot
        ends = [i for i, label in enumerate(labels[:limit]) if label == eot]
        if ends:
            rows.append((ids[:limit], ends))
    if not rows:
        raise ValueError("stop_rate: no assistant turn ends within the model's context")
    # the prediction after the last token of each answer
    preds = _predictions_at(model, [(ids, [e - 1 for e in ends]) for ids, ends in rows],
                            tokenizer.pad_id, batch_size)
    return sum(int((p == eot).sum()) for p in preds) / sum(len(ends) for _, ends in rows)


def reply_sample(prompts: list[Sample], per_kind: int = 8) -> list[Sample]:
    """A fixed sample for greedy decoding: ``per_kind`` prompts of each kind and language,
    at even intervals (fresh copies, so replies are not written into ``prompts``).
    """
    out = []
    for lang in ("ko", "en"):
        for kind in ("everyday", "question", "follow-up"):
            group = [s for s in prompts if s.kind == kind and s.lang == lang]
            step = max(1, len(group) // per_kind)
            out += [copy.deepcopy(s) for s in group[::step][:per_kind]]
    return out


def _rate(flags: list[bool], samples: list[Sample], kind: str) -> float:
    picked = [f for f, s in zip(flags, samples) if s.kind == kind]
    return sum(picked) / len(picked) if picked else float("nan")


def reply_metrics(samples: list[Sample]) -> dict:
    """End-of-turn rate, role leaks and exact-answer rates of a list of replied samples."""

    def rate(kind):
        group = [s for s in samples if s.kind == kind]
        return (
            (sum(s.correct for s in group) / len(group))
            if group
            else float("nan")
        ), len(group)

    q, n_q = rate("question")
    f, n_f = rate("follow-up")
    return {
        "n_replies": len(samples),
        "end_rate": sum(s.ended for s in samples) / len(samples),
        "role_leaks": sum(s.role_leak for s in samples),
        "question_exact": q,
        "n_questions": n_q,
        "follow_up_exact": f,
        "n_follow_ups": n_f,
    }


# ------------------------------------------------------------------ cache


def cache_dir() -> Path:
    """``$LLM_GLOSSARY_CACHE_DIR``, default ``~/.cache/llm-glossary``."""
    return Path(
        os.environ.get("LLM_GLOSSARY_CACHE_DIR")
        or Path.home() / ".cache" / "llm-glossary"
    )


def cache_key(
    rec: Recipe,
    device: str,
    *,
    extra: dict | None = None,
    package_dir: Path | None = None,
) -> str:
    """A hash of everything that can change the run's result.

    The source of the modules involved, every data file of the package (corpus, dialogs),
    the glossary entries (read as the generator reads them), the recipe, the torch version,
    the device and ``extra``. ``package_dir`` (default: the installed package) lets a test
    hash a modified copy.
    """
    h = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        h.update(label.encode() + b"\0" + hashlib.sha256(data).digest())

    pkg = (
        Path(package_dir)
        if package_dir is not None
        else Path(str(resources.files("llm_glossary")))
    )
    data_files = sorted(
        p
        for p in (pkg / "data").rglob("*")
        if p.is_file() and p.name != "glossary.json"
    )
    for name in _MODULES:
        path = pkg / f"{name}.py"
        if path.is_file():
            add(f"src:{name}", path.read_bytes())
    for path in data_files:
        add(f"data:{path.relative_to(pkg)}", path.read_bytes())
    add(
        "glossary",
        json.dumps(
            glossary_entries(), ensure_ascii=False, sort_keys=True
        ).encode(),
    )
    add("recipe", json.dumps(rec.to_dict(), sort_keys=True).encode())
    add("torch", torch.__version__.encode())
    add("device", device.encode())
    add("extra", json.dumps(extra or {}, sort_keys=True).encode())
    return h.hexdigest()[:20]


def _use_disk_cache(use_cache: bool) -> bool:
    return use_cache and os.environ.get("LLM_GLOSSARY_NO_CACHE", "") in (
        "",
        "0",
    )


def _save(folder: Path, w: Walkthrough) -> None:
    from llm_glossary.checkpoint import atomic_folder, atomic_write_json

    with atomic_folder(folder) as tmp:
        w.pretrained.save(tmp / "pretrained")
        w.model.save(tmp / "model")
        w.early.save(tmp / "early")
        atomic_write_json(
            tmp / "result.json",
            {
                "history": {k: asdict(v) for k, v in w.history.items()},
                "metrics": w.metrics,
                "samples": [asdict(s) for s in w.samples],
                "before": [asdict(s) for s in w.before],
                "recipe": w.recipe,
                "timings": w.timings,
            },
        )


def _load(folder: Path, tokenizer, device) -> Walkthrough | None:
    from llm_glossary.checkpoint import read_json

    if not (folder / "result.json").is_file() or not (folder / "early").is_dir():
        return None
    data = read_json(folder / "result.json")
    samples = lambda rows: [
        Sample(**{**r, "messages": [tuple(m) for m in r["messages"]]})
        for r in rows
    ]  # noqa: E731
    return Walkthrough(
        tokenizer=tokenizer,
        pretrained=Llama.load(folder / "pretrained", device=device),
        model=Llama.load(folder / "model", device=device),
        history={k: History(**v) for k, v in data["history"].items()},
        metrics=data["metrics"],
        samples=samples(data["samples"]),
        before=samples(data["before"]),
        recipe=data["recipe"],
        timings=data["timings"],
        cached=True,
        early=Llama.load(folder / "early", device=device),
    )


# ------------------------------------------------------------------ the run

_MEMO: dict[tuple, Walkthrough] = {}


def corpus_ids(tokenizer, split: str) -> torch.Tensor:
    """The corpus split as one tensor of token ids."""
    from llm_glossary.corpus import load_corpus

    return torch.tensor(tokenizer.encode(load_corpus(split)), dtype=torch.long)


# --8<-- [start:init]
def init_weights(model: Llama, head_std: float = 0.02) -> Llama:
    """Initial weights scaled to the width: every matrix N(0, 1/fan_in).

    - A matrix with fan_in inputs gets std 1/√fan_in, so each layer keeps the
      size of what flows through it (GPT-2's fixed 0.02 is 1/√fan_in only for
      a width of 2,500; at width 128 it shrinks every layer's output 4.4×).
    - The output head starts small (std ``head_std``): the first predictions
      are near uniform and the first loss is near ln V.
    - An untied input embedding gets unit-variance rows (PyTorch's default);
      a tied one is the output head and starts small like it.
    - The RMSNorm gains stay at one.
    """
    head = model.lm_head.weight
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p is head:
                p.normal_(0.0, head_std)
            elif name == "embed_tokens.weight":
                p.normal_(0.0, 1.0)
            elif p.dim() == 2:  # (out, in)
                p.normal_(0.0, p.shape[1] ** -0.5)
    return model
# --8<-- [end:init]


# --8<-- [start:run]
def train_walkthrough(
    rec: Recipe, device: torch.device, tokenizer
) -> Walkthrough:
    """Pretrain, fine-tune, evaluate and reply: the walkthrough, no cache."""
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    train_ids = corpus_ids(tokenizer, "train")  # (N,)
    held_ids = corpus_ids(tokenizer, "heldout")
    torch.manual_seed(rec.pretrain.seed)  # the initial weights
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, **rec.model)
    model = init_weights(Llama(config))
    times["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pre = pretrain(
        model, train_ids, rec.pretrain, heldout=held_ids, device=device
    )
    times["pretrain"] = time.perf_counter() - t0
    pretrained = copy.deepcopy(model).eval()

    t0 = time.perf_counter()
    train_dialogs = shipped_dialogs("train")
    held_dialogs = shipped_dialogs("heldout")
    early = []  # a copy for the misconceptions (variants)

    def keep(info: StepInfo) -> None:
        if info.step == variant_steps(rec):
            early.append(copy.deepcopy(model).eval())

    sft = finetune(model, train_dialogs, tokenizer, rec.finetune,
                   device=device, on_step=keep)
    model.eval()
    times["finetune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    seq = rec.finetune.seq_len
    before = evaluate(pretrained, held_dialogs, tokenizer, seq_len=seq)
    after = evaluate(model, held_dialogs, tokenizer, seq_len=seq)
    prompts = eval_prompts()
    glossary = [s for s in prompts if s.kind != "everyday"]
    exact = teacher_forced_exact(model, tokenizer, glossary)
    samples = greedy_replies(
        model, tokenizer, reply_sample(prompts, per_kind=rec.eval_replies)
    )
    before_samples = greedy_replies(
        pretrained,
        tokenizer,
        reply_sample(prompts, per_kind=max(1, rec.eval_replies // 8)),
    )
    times["evaluate"] = time.perf_counter() - t0

    metrics = {
        "corpus_train_tokens": int(train_ids.numel()),
        "corpus_heldout_tokens": int(held_ids.numel()),
        "pretrain_heldout_loss": pre.heldout_loss[-1],
        "corpus_loss_after_finetune": heldout_token_loss(
            model, held_ids, rec.pretrain
        ),
        "n_train_dialogs": len(train_dialogs),
        "n_heldout_dialogs": len(held_dialogs),
        "loss_pretrained": before.loss,
        "loss_finetuned": after.loss,
        "ppl_pretrained": before.perplexity,
        "ppl_finetuned": after.perplexity,
        "acc_pretrained": before.accuracy,
        "acc_finetuned": after.accuracy,
        "loss_ratio": after.loss / before.loss,
        "parameters": sum(p.numel() for p in model.parameters()),
        **reply_metrics(samples),
        "question_exact_all": _rate(exact, glossary, "question"),
        "follow_up_exact_all": _rate(exact, glossary, "follow-up"),
        "n_questions_all": sum(s.kind == "question" for s in glossary),
        "n_follow_ups_all": sum(s.kind == "follow-up" for s in glossary),
        "before_end_rate": sum(s.ended for s in before_samples)
        / len(before_samples),
        "before_exact": sum(s.correct for s in before_samples),
    }
    return Walkthrough(
        tokenizer,
        pretrained,
        model,
        {"pretrain": pre, "finetune": sft},
        metrics,
        samples,
        before_samples,
        rec.to_dict(),
        times,
        early=early[0] if early else None,
    )


# --8<-- [end:run]


def run(
    *,
    device: str | None = None,
    use_cache: bool = True,
    recipe: str | None = None,
) -> Walkthrough:
    """The walkthrough's run: memoized in the process, cached on disk.

    Args:
        device: "cpu" (default), "cuda" or "mps".
        use_cache: reuse a result from this process or from the disk cache; False trains
            again (and refreshes the cache).
        recipe: a name in :data:`llm_glossary.recipes.RECIPES`; default "walkthrough"
            ("walkthrough-gpu" on CUDA).

    Returns:
        A :class:`Walkthrough` with ``tokenizer, pretrained, model, history, metrics``.
    """
    dev = resolve_device(device)
    name = recipe or (
        "walkthrough-gpu" if dev.type == "cuda" else "walkthrough"
    )
    rec = get_recipe(name)
    tokenizer = chat_tokenizer(rec.tokenizer_vocab)
    memo_key = (name, str(dev))
    if use_cache and memo_key in _MEMO:
        return _MEMO[memo_key]
    folder = cache_dir() / f"walkthrough-{cache_key(rec, str(dev))}"
    result = (
        _load(folder, tokenizer, dev) if _use_disk_cache(use_cache) else None
    )
    if result is None:
        result = train_walkthrough(rec, dev, tokenizer)
        if _use_disk_cache(True):
            _save(folder, result)
    _MEMO[memo_key] = result
    return result


# ------------------------------------------------------------------ the misconceptions, measured

VARIANTS = ("assistant", "all", "no-eot")
_VARIANT_MEMO: dict[tuple, dict] = {}


def variants(
    *,
    device: str | None = None,
    use_cache: bool = True,
    recipe: str | None = None,
) -> dict[str, dict]:
    """Three fine-tunes that differ only in their targets, for the misconceptions.

    ``"assistant"`` (the assistant's tokens and <|eot_id|>, the default), ``"all"``
    (every token) and ``"no-eot"`` (the assistant's tokens without <|eot_id|>:
    ``TrainConfig(train_eot=False)``). Each is the first :func:`variant_steps` steps of
    the walkthrough's fine-tuning, from the same pretrained model, with the same
    schedule and the same batches (``finetune(..., stop_at=...)``); the
    ``"assistant"`` one is the walkthrough itself at that step, so only two run here.
    Each reports what its misconception is about, so that the build pays for nothing
    else: the held-out loss on the assistant's tokens (the same targets for all three) for
    "assistant" and "all"; for "assistant" and "no-eot", the share of held-out assistant
    turns after which the model would end its turn (:func:`stop_rate`); for "no-eot",
    ``reply``, the greedy reply to the first held-out glossary question of each language
    (``{"ko": {"text", "ended", "n_tokens"}, "en": ...}``). The other entries are None.
    """
    import dataclasses

    w = run(device=device, use_cache=use_cache, recipe=recipe)
    dev = w.model.lm_head.weight.device
    rec = get_recipe(w.recipe["name"])
    k = variant_steps(rec)
    key = (rec.name, str(dev))
    if use_cache and key in _VARIANT_MEMO:
        return _VARIANT_MEMO[key]
    from llm_glossary.checkpoint import atomic_write_json, read_json

    extra = {"variants": k}
    path = cache_dir() / f"variants-{cache_key(rec, str(dev), extra=extra)}.json"
    if _use_disk_cache(use_cache) and path.is_file():
        _VARIANT_MEMO[key] = read_json(path)
        return _VARIANT_MEMO[key]
    configs = {
        "all": dataclasses.replace(rec.finetune, train_on="all"),
        "no-eot": dataclasses.replace(rec.finetune, train_eot=False),
    }
    train_dialogs = shipped_dialogs("train")
    held = shipped_dialogs("heldout")
    prompts = eval_prompts()
    out: dict[str, dict] = {}
    for name in VARIANTS:
        t0 = time.perf_counter()
        if name == "assistant":
            model = w.early
        else:
            model = copy.deepcopy(w.pretrained)
            finetune(model, train_dialogs, w.tokenizer, configs[name],
                     device=dev, stop_at=k)
        model.eval()
        loss = stops = replies = None
        if name != "no-eot":
            seq = rec.finetune.seq_len
            loss = evaluate(model, held, w.tokenizer, seq_len=seq).loss
        if name != "all":
            stops = stop_rate(model, w.tokenizer, held)
        if name == "no-eot":
            firsts = [next(s for s in prompts if s.kind == "question" and s.lang == lang)
                      for lang in ("ko", "en")]
            replies = {
                s.lang: {"text": s.text, "ended": s.ended, "n_tokens": s.n_tokens}
                for s in greedy_replies(model, w.tokenizer, copy.deepcopy(firsts))
            }
        out[name] = {
            "steps": k,
            "heldout_loss": loss,
            "stop_rate": stops,
            "reply": replies,
            "seconds": time.perf_counter() - t0,
        }
    if _use_disk_cache(True):
        atomic_write_json(path, out)
    _VARIANT_MEMO[key] = out
    return out
