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
]

MAX_NEW_TOKENS = 96
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
) -> list[Sample]:
    """Greedy replies to every sample, filled in place (and returned).

    Prompts of equal token length are decoded together in one batch (no padding is needed,
    so each row is exactly its own greedy decode). A reply ends at the first <|eot_id|>;
    it leaks a role when it produces any other special token before that (as ``train.reply``).
    """
    eot = tokenizer.eot_id
    specials = {tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id}
    specials.update(tokenizer.piece_to_id(t) for t in tokenizer.special_tokens)
    groups: dict[int, list[tuple[Sample, list[int]]]] = {}
    for s in samples:
        ids = encode_prompt([Message(r, c) for r, c in s.messages], tokenizer)
        groups.setdefault(len(ids), []).append((s, ids))
    device = model.lm_head.weight.device
    for length in sorted(groups):
        rows = groups[length]
        n = min(max_new_tokens, model.config.max_seq_len - length)
        if n <= 0:  # no room left in the context: the reply cannot start
            continue
        idx = torch.tensor(
            [ids for _, ids in rows], dtype=torch.long, device=device
        )
        out = model.generate(idx, n, stop_tokens=[eot])[:, length:].tolist()
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
    eot = tokenizer.eot_id
    rows = []
    for s in samples:
        prompt = encode_prompt(
            [Message(r, c) for r, c in s.messages], tokenizer
        )
        target = tokenizer.encode(s.expected) + [eot]
        rows.append((prompt + target, len(prompt)))
    device = model.lm_head.weight.device
    out: list[bool] = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        T = max(len(ids) for ids, _ in chunk)
        idx = torch.full((len(chunk), T), tokenizer.pad_id, dtype=torch.long)
        for j, (ids, _) in enumerate(chunk):
            idx[j, : len(ids)] = torch.tensor(ids)
        pred = (
            model(idx.to(device)).argmax(-1).cpu()
        )  # (B, T): the next token after each position
        for j, (ids, start) in enumerate(chunk):
            want = torch.tensor(ids[start:])
            out.append(bool((pred[j, start - 1 : len(ids) - 1] == want).all()))
    return out


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

    if not (folder / "result.json").is_file():
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
    )


# ------------------------------------------------------------------ the run

_MEMO: dict[tuple, Walkthrough] = {}


def corpus_ids(tokenizer, split: str) -> torch.Tensor:
    """The corpus split as one tensor of token ids."""
    from llm_glossary.corpus import load_corpus

    return torch.tensor(tokenizer.encode(load_corpus(split)), dtype=torch.long)


def init_weights(model: Llama, std: float = 0.02) -> Llama:
    """Small normal initial weights (GPT-2's 0.02) for every matrix; norms stay at one.

    PyTorch's defaults give the embedding unit-variance rows, and with the embedding tied to
    the output head the first logits are so large that the loss starts near 30 instead of
    near ln V.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(0.0, std)
    return model


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
    sft = finetune(model, train_dialogs, tokenizer, rec.finetune, device=device)
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
        reply_sample(prompts, per_kind=max(1, rec.eval_replies // 4)),
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


def _finetune_without_eot(
    model: Llama, dialogs, tokenizer, config, device
) -> History:
    """Fine-tuning on the assistant tokens with every <|eot_id|> target masked out."""
    from llm_glossary import train as T

    examples, truncated, dropped = T._fit_dialogs(
        dialogs,
        tokenizer,
        config.seq_len + 1,
        config.train_on,
        config.long_dialogs,
    )
    eot = tokenizer.eot_id
    examples = [
        (ids, [-100 if i == eot else label for i, label in zip(ids, labels)])
        for ids, labels in examples
    ]
    flat = torch.tensor(
        [i for ids, labels in examples for i in (*ids, *labels, -1)],
        dtype=torch.long,
    )
    data = T._Dialogs(examples, tokenizer.pad_id, T._checksum(flat))
    history = T.History(
        kind="finetune",
        n_examples=len(examples),
        n_truncated=truncated,
        n_dropped=dropped,
    )
    return T._train(
        "finetune",
        model,
        data,
        config,
        heldout_loss=None,
        device=device,
        on_step=None,
        checkpoint=None,
        history=history,
    )


def variants(
    *,
    device: str | None = None,
    use_cache: bool = True,
    recipe: str | None = None,
    fraction: float = 0.34,
) -> dict[str, dict]:
    """Three short fine-tunes from the same pretrained model, for the misconceptions.

    ``"assistant"`` (targets: the assistant's tokens and <|eot_id|>, the default),
    ``"all"`` (every token is a target) and ``"no-eot"`` (the assistant's tokens without
    <|eot_id|>), each for ``fraction`` of the recipe's fine-tuning steps. Each reports
    the held-out loss on the assistant's tokens (the same targets for all three), the
    end-of-turn rate of greedy replies to a fixed sample of held-out prompts, and the
    exact-answer rate on the held-out glossary questions.
    """
    import dataclasses

    w = run(device=device, use_cache=use_cache, recipe=recipe)
    dev = w.model.lm_head.weight.device
    rec = get_recipe(w.recipe["name"])
    key = (rec.name, str(dev), fraction)
    if use_cache and key in _VARIANT_MEMO:
        return _VARIANT_MEMO[key]
    from llm_glossary.checkpoint import atomic_write_json, read_json

    path = (
        cache_dir()
        / f"variants-{cache_key(rec, str(dev), extra={'fraction': fraction})}.json"
    )
    if _use_disk_cache(use_cache) and path.is_file():
        _VARIANT_MEMO[key] = read_json(path)
        return _VARIANT_MEMO[key]
    steps = max(1, int(rec.finetune.steps * fraction))
    base = dataclasses.replace(
        rec.finetune,
        steps=steps,
        warmup_steps=min(rec.finetune.warmup_steps, steps),
        eval_every=0,
    )
    train_dialogs, held = shipped_dialogs("train"), shipped_dialogs("heldout")
    prompts = eval_prompts()
    questions = [s for s in prompts if s.kind == "question"]
    out: dict[str, dict] = {}
    for name in VARIANTS:
        model = copy.deepcopy(w.pretrained).train()
        t0 = time.perf_counter()
        if name == "no-eot":
            _finetune_without_eot(model, train_dialogs, w.tokenizer, base, dev)
        else:
            finetune(
                model,
                train_dialogs,
                w.tokenizer,
                dataclasses.replace(base, train_on=name),
                device=dev,
            )
        model.eval()
        replies = greedy_replies(
            model, w.tokenizer, reply_sample(prompts, per_kind=3)
        )
        ev = evaluate(model, held, w.tokenizer, seq_len=base.seq_len)
        out[name] = {
            "steps": steps,
            "heldout_loss": ev.loss,
            "end_rate": sum(s.ended for s in replies) / len(replies),
            "n_replies": len(replies),
            "question_exact": sum(
                teacher_forced_exact(model, w.tokenizer, questions)
            )
            / len(questions),
            "seconds": time.perf_counter() - t0,
        }
    if _use_disk_cache(True):
        atomic_write_json(path, out)
    _VARIANT_MEMO[key] = out
    return out
