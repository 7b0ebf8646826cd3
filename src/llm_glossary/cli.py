"""The ``llm-glossary`` command: fine-tune the glossary's model on your own dialogs.

Subcommands (``llm-glossary SUBCOMMAND --help`` for each):

```text
validate FILE...                       check dialog files, list every problem
pretrain [--corpus PATH...] --out DIR  next-token training on text files
sft --data FILE... [--base DIR] --out DIR
                                       dialog fine-tuning of a pretrained model
chat DIR [--prompt TEXT]...            talk to a model (streams tokens)
eval DIR --data FILE...                the walkthrough's metrics on your dialogs
export DIR --to HF_DIR                 a folder that Hugging Face transformers loads
```

The same functions run the pages, the tests and this command (``llm_glossary.dialog``,
``llm_glossary.train``, ``llm_glossary.recipes``); the command only parses options, draws
progress and prints. Under ``torchrun`` (``WORLD_SIZE`` > 1) it initialises
``torch.distributed`` from the environment (gloo on CPU, nccl on CUDA); only rank 0 prints,
logs and writes files.

A model folder written by ``pretrain`` or ``sft`` holds everything the other subcommands
need:

```text
DIR/config.json             the model's configuration (Hugging Face style)
DIR/model.safetensors       the weights        -> Llama.load(DIR)
DIR/tokenizer.json          the tokenizer, with the chat special tokens
DIR/tokenizer_config.json   the chat template (Hugging Face apply_chat_template)
DIR/run.json                the settings of the run (checked by --resume)
DIR/checkpoints/            training checkpoints for --resume
```

Exit status: 0 success; 1 wrong input (one line on stderr naming the file or option);
2 usage error; 130 interrupted (Ctrl-C; training writes a checkpoint first).

Korean guide: README.md, section "내 대화 데이터로 미세조정하기", and the walkthrough page
``docs/dialog-finetune.ko.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = [
    "main",
    "build_parser",
    "CommandError",
    "EXIT_OK",
    "EXIT_INPUT",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "MODEL_FILES",
    "load_model_folder",
]

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PROG = "llm-glossary"
KOREAN_GUIDE = (
    "한국어 안내: README.md, section '내 대화 데이터로 미세조정하기' "
    "(Fine-tuning on your own dialogs), and the page docs/dialog-finetune.ko.md."
)
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
DEFAULT_CONFIG, DEFAULT_CONFIG_CUDA = "walkthrough", "walkthrough-gpu"  # as walkthrough.run() chooses


class CommandError(Exception):
    """A mistake in the user's input: printed as one line, then exit status 1 (2 for usage)."""

    def __init__(self, message: str, *, status: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.status = status


class Interrupted(Exception):
    """Ctrl-C: the message says what was saved; exit status 130."""


# ---------------------------------------------------------------------------- options


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _role_pair(text: str) -> tuple[str, str]:
    name, sep, role = text.partition("=")
    if not sep or not name or not role:
        raise argparse.ArgumentTypeError(f"expected NAME=ROLE (e.g. bot=assistant), got {text!r}")
    roles = ("system", "user", "assistant")
    if role not in roles:
        raise argparse.ArgumentTypeError(f"ROLE must be one of {', '.join(roles)}, got {role!r} in {text!r}")
    return name, role


class _Formatter(argparse.HelpFormatter):
    """Wrap each line of a description or epilog on its own (keeps line breaks); show defaults."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        lines = []
        for line in text.splitlines():
            lead = line[: len(line) - len(line.lstrip())]
            lines.append(textwrap.fill(line.strip(), width, initial_indent=indent + lead,
                                       subsequent_indent=indent + lead) if line.strip() else "")
        return "\n".join(lines)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS, []) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse with exit status 2 and one error line (plus the usage) for usage errors."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_data_options(p: argparse.ArgumentParser, *, required: bool, help_text: str) -> None:
    p.add_argument("--data", nargs="+", metavar="FILE", required=required, type=Path, help=help_text)
    p.add_argument(
        "--role-map", action="append", type=_role_pair, metavar="NAME=ROLE", default=[],
        help="read speaker NAME as ROLE (system, user, assistant); repeat for several names",
    )


def _add_training_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="model folder to write: config.json, model.safetensors, tokenizer files, "
                        "checkpoints/")
    g.add_argument("--config", metavar="NAME",
                   help="recipe from llm_glossary.recipes (model size and training settings): tiny, "
                        f"walkthrough, walkthrough-gpu (default: {DEFAULT_CONFIG}, {DEFAULT_CONFIG_CUDA} on CUDA)")
    g.add_argument("--steps", type=_positive_int, metavar="N", help="optimizer steps (default: the recipe's)")
    g.add_argument("--batch-size", type=_positive_int, metavar="N",
                   help="global batch: sequences per optimizer step over all processes, split "
                        "across them (default: the recipe's)")
    g.add_argument("--micro-batch-size", type=_positive_int, metavar="N",
                   help="sequences per forward pass and process; the rest is gradient accumulation "
                        "(default: the recipe's, reduced to fit the batch)")
    g.add_argument("--lr", type=_positive_float, metavar="LR", help="peak learning rate (default: the recipe's)")
    g.add_argument("--seq-len", type=_positive_int, metavar="N",
                   help="tokens per training sequence (default: the recipe's; at most the model's max_seq_len)")
    g.add_argument("--warmup-steps", type=_nonnegative_int, metavar="N",
                   help="steps of linear learning-rate warm-up (default: the recipe's, at most --steps)")
    g.add_argument("--seed", type=_nonnegative_int, metavar="N", help="random seed (default: the recipe's)")
    g.add_argument("--save-every", type=_positive_int, metavar="N",
                   help="write a checkpoint every N steps, and always at the end (default: steps / 10)")
    g.add_argument("--keep-last", type=_positive_int, default=3, metavar="K", help="checkpoints to keep")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (exactly: same weights and "
                        "losses as an uninterrupted run); starts from step 0 when there is none")
    g.add_argument("--eval-every", type=_positive_int, metavar="N",
                   help="held-out loss every N steps (default: the recipe's)")
    g.add_argument("--device", default="auto", metavar="D",
                   help="cpu, cuda, cuda:N, mps or auto (CUDA, then MPS, then CPU)")
    g.add_argument("--log-jsonl", type=Path, metavar="FILE",
                   help="write one JSON line of metrics per step (rank 0 only)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``llm-glossary`` (every subcommand has ``--help``)."""
    parser = _Parser(
        prog=PROG,
        formatter_class=_Formatter,
        description="Validate dialog files, pretrain and fine-tune the glossary's Llama-style model on "
                    "them, chat with it, evaluate it and export it for Hugging Face transformers.",
        epilog="Run under torchrun for several processes or GPUs, e.g.\n"
               "  torchrun --standalone --nproc-per-node 2 -m llm_glossary sft --data my.json --base base/ --out out/\n"
               "Set LLM_GLOSSARY_DEBUG=1 to see a traceback instead of the one-line error message.\n"
               f"{KOREAN_GUIDE}",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=description, epilog=KOREAN_GUIDE,
                              formatter_class=_Formatter)

    p = add("validate", "check dialog files and list every problem",
            "Read dialog files (the formats of llm_glossary.dialog.load_dialogs; see the "
            "dialog-format page) and report every problem with its place (file:line:column or JSON path), "
            "then one summary line per valid file: dialogs, turns, tokens. Exit status 1 when "
            "any file has a problem.")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="dialog files to check")
    p.add_argument("--role-map", action="append", type=_role_pair, metavar="NAME=ROLE", default=[],
                   help="read speaker NAME as ROLE (system, user, assistant); repeat for several names")
    p.add_argument("--tokenizer", type=Path, metavar="DIR",
                   help="count tokens with the tokenizer of this model folder (default: the shipped one)")
    p.set_defaults(func=cmd_validate)

    p = add("pretrain", "next-token training on text files",
            "Train a new model from random weights to predict the next token of plain UTF-8 text "
            "files (default: the corpus shipped with the package). The result is a model folder "
            "for sft, chat, eval and export.")
    p.add_argument("--corpus", nargs="+", type=Path, metavar="PATH",
                   help="text files, or folders whose *.txt files are read (default: the shipped corpus)")
    p.add_argument("--heldout", nargs="+", type=Path, metavar="PATH",
                   help="text for the held-out loss (default: the shipped held-out corpus when "
                        "--corpus is not given)")
    _add_training_options(p)
    p.set_defaults(func=cmd_pretrain)

    p = add("sft", "dialog fine-tuning (supervised fine-tuning) of a pretrained model",
            "Fine-tune a pretrained model on dialog files: the loss covers the assistant's turns and "
            "their end-of-turn token only. Check the files first with 'llm-glossary validate'.")
    _add_data_options(p, required=True, help_text="dialog files to train on")
    p.add_argument("--heldout", nargs="+", type=Path, metavar="FILE",
                   help="dialog files for the held-out loss")
    p.add_argument("--base", type=Path, metavar="DIR",
                   help="pretrained model folder (default: the walkthrough's pretrained model, "
                        "trained on first use and cached)")
    _add_training_options(p)
    p.set_defaults(func=cmd_sft)

    p = add("chat", "talk to a model; tokens are printed as they are generated",
            "An interactive multi-turn chat. Commands: /reset forgets the conversation, /exit "
            "(or Ctrl-D) leaves. With --prompt the replies are printed and the command ends "
            "(several --prompt options make one multi-turn conversation).")
    p.add_argument("dir", type=Path, metavar="DIR", help="model folder written by pretrain or sft")
    p.add_argument("--prompt", action="append", metavar="TEXT",
                   help="one user turn; repeat for a multi-turn conversation; no interactive session")
    p.add_argument("--system", metavar="TEXT", help="a system message at the start of the conversation")
    p.add_argument("--max-new-tokens", type=_positive_int, default=96, metavar="N",
                   help="longest reply in tokens")
    p.add_argument("--temperature", type=_nonnegative_float, default=0.0, metavar="T",
                   help="0 picks the most likely token (greedy); above 0 samples")
    p.add_argument("--seed", type=_nonnegative_int, default=0, metavar="N", help="seed for sampling")
    p.add_argument("--device", default="auto", metavar="D", help="cpu, cuda, cuda:N, mps or auto")
    p.set_defaults(func=cmd_chat)

    p = add("eval", "the walkthrough's metrics on your dialogs",
            "Held-out loss, perplexity and next-token accuracy on the assistant's tokens "
            "(teacher forcing), and, replying to every user turn, how often the model ends its "
            "turn with the end-of-turn token and how often it starts writing another role's turn.")
    p.add_argument("dir", type=Path, metavar="DIR", help="model folder written by pretrain or sft")
    _add_data_options(p, required=True, help_text="dialog files to evaluate on")
    p.add_argument("--max-new-tokens", type=_positive_int, default=96, metavar="N",
                   help="longest reply in tokens for the end-of-turn and role-leak rates")
    p.add_argument("--max-replies", type=_nonnegative_int, default=200, metavar="N",
                   help="generate at most N replies (0: skip generation)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--device", default="auto", metavar="D", help="cpu, cuda, cuda:N, mps or auto")
    p.set_defaults(func=cmd_eval)

    p = add("export", "write a folder that Hugging Face transformers loads",
            "Write config.json, model.safetensors, generation_config.json, tokenizer.json and "
            "tokenizer_config.json (with the chat template) into HF_DIR, atomically: the folder "
            "appears complete or not at all. Load it with AutoModelForCausalLM.from_pretrained and "
            "AutoTokenizer.from_pretrained.")
    p.add_argument("dir", type=Path, metavar="DIR", help="model folder written by pretrain or sft")
    p.add_argument("--to", required=True, type=Path, metavar="HF_DIR", help="the folder to write")
    p.add_argument("--force", action="store_true", help="replace HF_DIR when it exists")
    p.set_defaults(func=cmd_export)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llm-glossary")
    except PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version (0) and usage errors (2)
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
    rank = int(os.environ.get("RANK", "0") or 0)
    prefix = f"{PROG} {args.command}: " + (f"[rank {rank}] " if rank else "")
    try:
        return int(args.func(args) or EXIT_OK)
    except Interrupted as stop:
        if rank == 0:
            print(f"{PROG} {args.command}: interrupted: {stop}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        if rank == 0:
            print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CommandError as err:
        _error(prefix, str(err))
        if err.status == EXIT_USAGE:
            print(f"see '{PROG} {args.command} --help'", file=sys.stderr)
        return err.status
    except Exception as err:  # noqa: BLE001 - only a user's mistake is turned into a message
        message = _user_error_message(err)
        if message is None or os.environ.get("LLM_GLOSSARY_DEBUG"):
            raise  # a bug: the traceback helps whoever fixes it
        _error(prefix, message)
        return EXIT_INPUT


def _error(prefix: str, message: str) -> None:
    first = " ".join(message.strip().split("\n")[:1]) or "error"
    print(f"{prefix}error: {first}", file=sys.stderr)


def _is_out_of_memory(err: BaseException) -> bool:
    text = str(err).lower()
    return "out of memory" in text or "can't allocate memory" in text  # CUDA / MPS, and the CPU allocator


def _user_error_message(err: BaseException) -> str | None:
    """The one-line message for an error a user can cause, or None for a bug."""
    if isinstance(err, MemoryError):
        return ("out of memory: the model or the batch does not fit; use a smaller --config "
                "(e.g. tiny), a smaller --micro-batch-size or --batch-size")
    if isinstance(err, RuntimeError) and _is_out_of_memory(err):
        return ("out of memory on the device: the model or the batch does not fit; lower "
                "--micro-batch-size (gradient accumulation keeps the global batch), or use a "
                "smaller --config")
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}"
    if isinstance(err, ValueError):
        return str(err)  # the package's convention: ValueError names the value and what was expected
    return None


# ---------------------------------------------------------------------------- helpers


@dataclasses.dataclass
class _Dist:
    """Where this process sits under torchrun (rank 0 of 1 otherwise)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _resolve_device(name: str, local_rank: int = 0, *, distributed: bool = False):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        mps = getattr(torch.backends, "mps", None)
        if not distributed and mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CommandError(f"--device {name!r}: not a device; expected cpu, cuda, cuda:N, mps or auto",
                           status=EXIT_USAGE) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CommandError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); "
                               "use --device cpu")
        count = torch.cuda.device_count()
        if device.index is None:
            device = torch.device("cuda", local_rank % count)
        elif device.index >= count:
            raise CommandError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 .. cuda:{count - 1}")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise CommandError(f"--device {name}: MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise CommandError(f"--device {name}: expected cpu, cuda, cuda:N, mps or auto", status=EXIT_USAGE)
    return device


@contextlib.contextmanager
def _distributed(device_name: str):
    """Initialise torch.distributed from torchrun's environment when WORLD_SIZE > 1."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    device = _resolve_device(device_name, local_rank, distributed=world > 1)
    ctx = _Dist(rank=rank, world_size=world, local_rank=local_rank)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type not in ("cuda", "cpu"):
            raise CommandError(f"--device {device}: several processes need cpu or cuda")
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
            ctx.initialized = True
    try:
        yield ctx, device
    finally:
        if ctx.initialized:
            import torch.distributed as dist

            dist.destroy_process_group()


def _check_files(paths: Sequence[Path], option: str) -> list[Path]:
    out = []
    for path in paths:
        if not path.exists():
            raise CommandError(f"{option} {path}: no such file")
        if path.is_dir():
            raise CommandError(f"{option} {path}: is a folder, expected a file")
        out.append(path)
    return out


def _text_files(paths: Sequence[Path], option: str) -> list[Path]:
    """Files, and the *.txt files inside folders (sorted), for --corpus."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not found:
                raise CommandError(f"{option} {path}: the folder holds no *.txt files")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise CommandError(f"{option} {path}: no such file or folder")
    return files


def _read_text(path: Path, option: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CommandError(f"{option} {path}: cannot read the file ({err.strerror or err})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise CommandError(f"{option} {path}: not UTF-8 text (byte {err.start}, line {line}: {err.reason})") from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state_sha256(model) -> str:
    """A fingerprint of a model's weights (names, shapes, dtypes and bytes)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _role_map(pairs: Sequence[tuple[str, str]]) -> dict[str, str] | None:
    return dict(pairs) if pairs else None


def _load_dialog_files(paths: Sequence[Path], option: str, role_map: dict | None) -> list:
    """Every dialog of every file; a problem in any file is a CommandError naming it."""
    from llm_glossary.dialog import DialogFormatError, load_dialogs

    dialogs: list = []
    for path in _check_files(paths, option):
        try:
            dialogs.extend(load_dialogs(path, role_map=role_map))
        except DialogFormatError as err:
            problems = _problems(err)
            more = f" (and {len(problems) - 1} more; run 'llm-glossary validate {path}')" if len(problems) > 1 else ""
            raise CommandError(f"{_problem_text(problems[0], path)}{more}") from None
    if not dialogs:
        raise CommandError(f"{option}: the files hold no dialogs")
    return dialogs


_ROLE_MAP_HINT = re.compile(r"pass role_map, e\.g\. load_dialogs\(path, role_map=\{'([^']+)': '([^']+)'\}\)")


def _problem_text(problem: Any, path: Path) -> str:
    """One problem as a line that names the file; library hints spelled as command options."""
    text = _ROLE_MAP_HINT.sub(r"add --role-map \1=\2", str(problem))
    return text if text.startswith(str(path)) else f"{path}: {text}"


def _problems(err: Exception) -> list[str]:
    problems = list(getattr(err, "problems", None) or [str(err)])
    return list(dict.fromkeys(problems))  # each problem once, in file order


def _load_tokenizer(folder: Path):
    """The tokenizer saved in a model folder (tokenizer.json with the chat tokens)."""
    from llm_glossary import dialog

    path = folder / "tokenizer.json"
    if not path.exists():
        raise CommandError(f"{folder}: no tokenizer.json; expected a model folder written by "
                           f"{PROG} pretrain or sft")
    from llm_glossary.tokenizer import ByteFallbackBPE

    tokenizer = ByteFallbackBPE.from_hf(path)
    missing = [t for t in dialog.CHAT_SPECIALS if t not in tokenizer.pieces]
    if missing:
        raise CommandError(f"{path}: the tokenizer lacks the chat tokens {', '.join(missing)}; expected a "
                           f"model folder written by {PROG} pretrain or sft")
    return tokenizer


def _save_tokenizer(tokenizer, folder: Path) -> None:
    tokenizer.save_pretrained(folder)


def load_model_folder(folder: str | Path, *, device=None):
    """(model, tokenizer) from a folder written by ``pretrain`` or ``sft``.

    A folder that is missing, unfinished or not a model folder raises ``CommandError`` with
    one line that says so (the command prints it and exits with status 1).
    """
    from llm_glossary.model import Llama

    folder = Path(folder)
    if not folder.exists():
        raise CommandError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise CommandError(f"{folder}: is a file, expected a model folder written by {PROG} pretrain or sft")
    if not (folder / "config.json").exists():
        if (folder / CHECKPOINTS).is_dir():
            raise CommandError(f"{folder}: the training run has not finished (no config.json yet); "
                               f"continue it with the same command and --resume")
        raise CommandError(f"{folder}: not a model folder (no config.json); expected a folder written by "
                           f"{PROG} pretrain or sft")
    tokenizer = _load_tokenizer(folder)
    model = Llama.load(folder, device=device)
    if model.config.vocab_size != len(tokenizer):
        raise CommandError(f"{folder}: tokenizer.json has {len(tokenizer)} pieces but the model's vocabulary "
                           f"has {model.config.vocab_size}")
    return model.eval(), tokenizer


def _write_json(path: Path, data: dict) -> None:
    from llm_glossary.checkpoint import atomic_write_json

    atomic_write_json(path, data)


# ---------------------------------------------------------------------------- validate


def cmd_validate(args: argparse.Namespace) -> int:
    from llm_glossary.dialog import DialogFormatError, encode_dialog, load_dialogs

    role_map = _role_map(args.role_map)
    tokenizer = None
    bad = 0
    for path in args.files:
        if not path.exists():
            print(f"{path}: no such file")
            bad += 1
            continue
        if path.is_dir():
            print(f"{path}: is a folder, expected a dialog file")
            bad += 1
            continue
        try:
            dialogs = load_dialogs(path, role_map=role_map)
        except DialogFormatError as err:
            problems = _problems(err)
            for problem in problems:
                print(_problem_text(problem, path))
            print(f"{path}: {len(problems)} problem{'s' if len(problems) != 1 else ''}")
            bad += 1
            continue
        if tokenizer is None:
            tokenizer = _validate_tokenizer(args.tokenizer)
        turns = sum(len(d.messages) for d in dialogs)
        tokens = trained = 0
        for d in dialogs:
            ids, labels = encode_dialog(d, tokenizer)
            tokens += len(ids)
            trained += sum(1 for x in labels if x != -100)
        print(f"{path}: ok: {len(dialogs)} dialogs, {turns} turns, {tokens} tokens "
              f"({trained} in assistant turns, trained on)")
    if bad:
        print(f"{bad} of {len(args.files)} file{'s' if len(args.files) != 1 else ''} with problems", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_OK


def _validate_tokenizer(folder: Path | None):
    if folder is not None:
        if not folder.is_dir():
            raise CommandError(f"--tokenizer {folder}: no such folder")
        return _load_tokenizer(folder)
    from llm_glossary.dialog import chat_tokenizer

    return chat_tokenizer()


# ---------------------------------------------------------------------------- training


class _Progress:
    """on_step: a tqdm bar on a terminal, JSON lines with --log-jsonl, the last step for the summary."""

    def __init__(self, *, enabled: bool, log_path: Path | None, resume: bool, desc: str) -> None:
        self.enabled = enabled
        self.log_path = log_path
        self.resume = resume
        self.desc = desc
        self.bar = None
        self.log = None
        self.first_step: int | None = None
        self.last = None
        self.last_heldout: float | None = None

    def __call__(self, info) -> None:
        if self.first_step is None:
            self.first_step = info.step
            self._open_log(info.step)
        self.last = info
        heldout = getattr(info, "heldout_loss", None)
        if heldout is not None:
            self.last_heldout = heldout
        if self.log is not None:
            self.log.write(json.dumps(_step_record(info), ensure_ascii=False) + "\n")
            self.log.flush()
        if self.enabled:
            if self.bar is None:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=info.steps, initial=info.step - 1, desc=self.desc, unit="step",
                                file=sys.stderr, dynamic_ncols=True)
            post = {"loss": f"{info.loss:.3f}", "tok/s": f"{info.tokens_per_s:,.0f}"}
            if self.last_heldout is not None:
                post["heldout"] = f"{self.last_heldout:.3f}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(info.step - self.bar.n)

    def _open_log(self, first_step: int) -> None:
        """Open --log-jsonl: a resumed run keeps the lines before its first step, drops the rest."""
        if self.log_path is None:
            return
        kept: list[str] = []
        if self.resume and self.log_path.exists():
            for line in self.log_path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short when the run was killed
                if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] < first_step:
                    kept.append(line + "\n")
        from llm_glossary.checkpoint import atomic_write_text

        atomic_write_text(self.log_path, "".join(kept))
        self.log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.log is not None:
            self.log.close()
            self.log = None


def _step_record(info) -> dict:
    if dataclasses.is_dataclass(info):
        record = dataclasses.asdict(info)
    else:
        record = dict(vars(info))
    return {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _progress_enabled() -> bool:
    return sys.stderr.isatty() and sys.stdout.isatty()


def _recipe(name: str):
    from llm_glossary.recipes import recipe

    try:
        return recipe(name)
    except ValueError as err:
        raise CommandError(f"--config {name}: {err}", status=EXIT_USAGE) from None


def _train_config(base, args, world_size: int):
    """The recipe's TrainConfig with the command's options applied; the batch split checked."""
    changes: dict[str, Any] = {}
    for option, field in (("steps", "steps"), ("batch_size", "batch_size"), ("lr", "lr"),
                          ("seed", "seed"), ("eval_every", "eval_every"), ("seq_len", "seq_len")):
        value = getattr(args, option)
        if value is not None:
            changes[field] = value
    steps = changes.get("steps", base.steps)
    if args.warmup_steps is not None:
        if args.warmup_steps > steps:
            raise CommandError(f"--warmup-steps {args.warmup_steps} exceeds the {steps} steps of the run (--steps)")
        changes["warmup_steps"] = args.warmup_steps
    elif base.warmup_steps > steps:
        changes["warmup_steps"] = steps  # a short run: warm up over all of it
    batch = changes.get("batch_size", base.batch_size)
    if batch % world_size:
        raise CommandError(f"--batch-size {batch} cannot be split evenly over {world_size} processes; "
                           f"use a multiple of {world_size}")
    per_process = batch // world_size
    micro = args.micro_batch_size
    if micro is not None:
        if per_process % micro:
            raise CommandError(f"--micro-batch-size {micro} must divide the per-process batch "
                               f"{per_process} (--batch-size {batch} / {world_size} processes)")
    else:
        micro = min(base.micro_batch_size, per_process)
        while per_process % micro:
            micro -= 1
    changes["micro_batch_size"] = micro
    return dataclasses.replace(base, **changes)


_NOT_COMPARED = ("micro_batch_size", "processes", "files")  # may change on --resume


def _prepare_out(out: Path, settings: dict, resume: bool) -> bool:
    """Check --out before any work; returns whether a checkpoint to resume from exists."""
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out}: is a file, expected a folder")
    run_file = out / RUN_FILE
    ckpts = out / CHECKPOINTS
    has_run = run_file.exists() or (out / "model.safetensors").exists() or (ckpts.is_dir() and any(ckpts.iterdir()))
    if has_run and not resume:
        raise CommandError(f"--out {out}: already holds a training run; add --resume to continue it, "
                           "or choose another folder")
    if not resume or not run_file.exists():
        return False
    try:
        previous = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CommandError(f"{run_file}: cannot read the settings of the run to resume ({err})") from None
    for key, value in settings.items():
        if key in _NOT_COMPARED or previous.get(key) == value:
            continue
        option = {"data_sha256": "--data", "heldout_sha256": "--heldout", "corpus_sha256": "--corpus",
                  "base_sha256": "--base"}.get(key, "--" + key.replace("_", "-"))
        shown = "other file contents" if key.endswith("_sha256") else f"{previous.get(key)!r} there, {value!r} now"
        raise CommandError(f"--resume: {option} differs from the run in {out} ({shown}); resume with the "
                           "same settings or choose another --out")
    return ckpts.is_dir() and any(ckpts.iterdir())


def _settings(command: str, args, config, files: dict[str, list[Path]], extra: dict) -> dict:
    """What must stay the same for --resume to continue the run exactly (files by content)."""
    return {
        "command": command,
        "config": args.config,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "seed": config.seed,
        "eval_every": config.eval_every,
        "warmup_steps": config.warmup_steps,
        "seq_len": config.seq_len,
        **{f"{key}_sha256": [_sha256(p) for p in paths] for key, paths in files.items()},
        **extra,
        "micro_batch_size": config.micro_batch_size,
        "files": {key: [str(p) for p in paths] for key, paths in files.items()},
    }


def _run_training(command: str, args, *, prepare: Callable, train_fn: Callable) -> int:
    """The shared body of pretrain and sft: folders, devices, progress, checkpoints, summary.

    ``prepare(dist_ctx, device)`` returns ``(tokenizer, model, data, heldout, config, settings)``;
    ``train_fn(model, data, tokenizer, config, heldout, device, on_step, checkpoint)`` runs the loop.
    """
    import torch

    from llm_glossary import train

    with _distributed(args.device) as (dist_ctx, device):
        tokenizer, model, data, heldout, config, settings = prepare(dist_ctx, device)
        out: Path = args.out
        resumable = _prepare_out(out, settings, args.resume)
        if args.log_jsonl is not None and args.log_jsonl.is_dir():
            raise CommandError(f"--log-jsonl {args.log_jsonl}: is a folder, expected a file name")
        _barrier(dist_ctx)
        if dist_ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if args.log_jsonl is not None:
                args.log_jsonl.parent.mkdir(parents=True, exist_ok=True)
            if not (out / RUN_FILE).exists():
                _write_json(out / RUN_FILE, {**settings, "processes": dist_ctx.world_size})
            _save_tokenizer(tokenizer, out)
            if args.resume and not resumable:
                print(f"{PROG} {command}: nothing to resume in {out}: starting from step 0", file=sys.stderr)
        _barrier(dist_ctx)
        every = args.save_every or max(1, config.steps // 10)
        checkpoint = train.Checkpointing(out / CHECKPOINTS, every=every, keep_last=args.keep_last,
                                         resume=args.resume)
        progress = _Progress(enabled=dist_ctx.is_main and _progress_enabled(),
                             log_path=args.log_jsonl if dist_ctx.is_main else None,
                             resume=args.resume, desc=command)
        started = time.perf_counter()
        try:
            history = train_fn(model, data, tokenizer, config, heldout, device, progress, checkpoint)
        except KeyboardInterrupt:
            progress.close()
            step = progress.last.step if progress.last is not None else 0
            latest = checkpoint.latest() if dist_ctx.is_main else None
            where = f"the last checkpoint is {latest}" if latest else f"no checkpoint in {out / CHECKPOINTS} yet"
            raise Interrupted(f"stopped after step {step}; {where}; continue with the same command "
                              "and --resume") from None
        except MemoryError:
            progress.close()
            raise
        except RuntimeError as err:
            progress.close()
            if "diverged" in str(err):  # the loss became inf/nan: the options, not the code
                raise CommandError(f"{err}; set it with --lr") from None
            if _is_out_of_memory(err):
                torch.cuda.empty_cache() if torch.cuda.is_available() else None
                raise CommandError(f"out of memory on {device} with --config {args.config}, micro-batch "
                                   f"{config.micro_batch_size} x {config.seq_len} tokens: lower "
                                   "--micro-batch-size (the global --batch-size stays) or use a smaller "
                                   "--config") from None
            raise
        progress.close()
        elapsed = time.perf_counter() - started
        if dist_ctx.is_main:
            model.save(out)  # the tokenizer files were written before training
            _print_summary(command, out, progress, history, elapsed)
        _barrier(dist_ctx)
    return EXIT_OK


def _barrier(dist_ctx: _Dist) -> None:
    if dist_ctx.initialized:
        import torch.distributed as dist

        dist.barrier()


def _print_summary(command: str, out: Path, progress: _Progress, history, elapsed: float) -> None:
    last = progress.last
    parts = [f"{command}: done in {_duration(elapsed)}"]
    if last is not None:
        parts.append(f"step {last.step}/{last.steps}")
        parts.append(f"{last.tokens:,} tokens")
        parts.append(f"final loss {last.loss:.4f}")
    elif progress.first_step is None:
        parts.append("no steps left to run (the run had already finished)")
    if progress.last_heldout is not None:
        parts.append(f"held-out loss {progress.last_heldout:.4f}")
    print(", ".join(parts))
    truncated, dropped = getattr(history, "n_truncated", 0), getattr(history, "n_dropped", 0)
    if truncated or dropped:
        print(f"{truncated} dialogs longer than the recipe's seq_len were shortened from the left and "
              f"{dropped} dropped; a --config with a longer seq_len keeps them whole")
    print(f"model written to {out} (chat: {PROG} chat {out}; export: {PROG} export {out} --to HF_DIR)")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def _check_seq_len(config, model, args) -> None:
    limit = model.config.max_seq_len
    if config.seq_len > limit:
        where = "--seq-len" if args.seq_len is not None else f"--config {args.config}"
        base = " of --base" if getattr(args, "base", None) is not None else ""
        raise CommandError(f"{where}: sequences of {config.seq_len} tokens are longer than the model{base} "
                           f"takes (max_seq_len {limit}); use --seq-len {limit} or less, or the --config "
                           "the model was pretrained with")


def _build_model(recipe, vocab_size: int, seed: int):
    """A new model as the walkthrough builds it: the recipe's size, seeded small initial weights."""
    import torch

    from llm_glossary.model import Llama, LlamaConfig
    from llm_glossary.walkthrough import init_weights

    torch.manual_seed(seed)
    return init_weights(Llama(LlamaConfig(vocab_size=vocab_size, **recipe.model)))


def _choose_config(args, device) -> None:
    if args.config is None:
        args.config = DEFAULT_CONFIG_CUDA if device.type == "cuda" else DEFAULT_CONFIG


def cmd_pretrain(args: argparse.Namespace) -> int:
    def prepare(dist_ctx: _Dist, device):
        from llm_glossary.corpus import corpus_files
        from llm_glossary.dialog import chat_tokenizer
        from llm_glossary.walkthrough import corpus_ids

        _choose_config(args, device)
        recipe = _recipe(args.config)
        config = _train_config(recipe.pretrain, args, dist_ctx.world_size)
        tokenizer = chat_tokenizer(recipe.tokenizer_vocab)
        if args.corpus:  # the reader's text files
            files = _text_files(args.corpus, "--corpus")
            tokens = _encode_texts([_read_text(p, "--corpus") for p in files], tokenizer, files, "--corpus")
        else:  # the shipped corpus, tokenized as the walkthrough does
            files = corpus_files("train")
            tokens = corpus_ids(tokenizer, "train")
        if args.heldout:
            held_files = _text_files(args.heldout, "--heldout")
            heldout = _encode_texts([_read_text(p, "--heldout") for p in held_files], tokenizer, held_files,
                                    "--heldout")
        elif not args.corpus:
            held_files = corpus_files("heldout")
            heldout = corpus_ids(tokenizer, "heldout")
        else:
            held_files, heldout = [], None
        model = _build_model(recipe, len(tokenizer), config.seed)
        _check_seq_len(config, model, args)
        settings = _settings("pretrain", args, config, {"corpus": files, "heldout": held_files}, {})
        return tokenizer, model, tokens, heldout, config, settings

    def run(model, tokens, tokenizer, config, heldout, device, on_step, checkpoint):
        from llm_glossary import train

        return train.pretrain(model, tokens, config, heldout=heldout, device=device, on_step=on_step,
                              checkpoint=checkpoint)

    return _run_training("pretrain", args, prepare=prepare, train_fn=run)


def _encode_texts(texts: Sequence[str], tokenizer, files: Sequence[Path], option: str):
    """The files' texts as one tensor of ids, joined by newlines (as ``load_corpus`` joins lines)."""
    import torch

    ids = tokenizer.encode("\n".join(text.rstrip("\n") for text in texts))
    if len(ids) < 2:
        raise CommandError(f"{option}: the text is too short to train on ({len(ids)} tokens in "
                           f"{', '.join(map(str, files))})")
    return torch.tensor(ids, dtype=torch.long)


def cmd_sft(args: argparse.Namespace) -> int:
    def prepare(dist_ctx: _Dist, device):
        _choose_config(args, device)
        recipe = _recipe(args.config)
        config = _train_config(recipe.finetune, args, dist_ctx.world_size)
        role_map = _role_map(args.role_map)
        dialogs = _load_dialog_files(args.data, "--data", role_map)
        heldout = _load_dialog_files(args.heldout, "--heldout", role_map) if args.heldout else None
        if args.base is not None:
            model, tokenizer = load_model_folder(args.base)
            model.train()
        else:
            if dist_ctx.world_size > 1:  # walkthrough.run() trains in one process; a group would join in
                raise CommandError("--base: under torchrun give a pretrained model folder, e.g. from "
                                   f"'{PROG} pretrain --out runs/base' (the walkthrough's model is trained "
                                   "by a single process)")
            try:
                from llm_glossary import walkthrough
            except ImportError:  # pragma: no cover - the package ships it
                raise CommandError("--base: this installation has no llm_glossary.walkthrough; give a "
                                   f"pretrained model folder (e.g. from '{PROG} pretrain')") from None
            run = walkthrough.run(device=str(device), recipe=args.config)
            model, tokenizer = run.pretrained, run.tokenizer
            import copy

            model = copy.deepcopy(model).cpu().train()  # the memoized model stays untouched
        _check_seq_len(config, model, args)
        base = _state_sha256(model)
        settings = _settings("sft", args, config,
                             {"data": list(args.data), "heldout": list(args.heldout or [])},
                             {"base_sha256": base, "role_map": dict(role_map or {})})
        return tokenizer, model, dialogs, heldout, config, settings

    def run(model, dialogs, tokenizer, config, heldout, device, on_step, checkpoint):
        from llm_glossary import train

        return train.finetune(model, dialogs, tokenizer, config, heldout=heldout, device=device,
                              on_step=on_step, checkpoint=checkpoint)

    return _run_training("sft", args, prepare=prepare, train_fn=run)


# ---------------------------------------------------------------------------- chat


def cmd_chat(args: argparse.Namespace) -> int:
    import torch

    from llm_glossary import train
    from llm_glossary.dialog import Message

    device = _resolve_device(args.device)
    model, tokenizer = load_model_folder(args.dir, device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed) if args.temperature > 0 else None
    system = [Message("system", args.system)] if args.system else []
    messages: list = list(system)
    interactive = args.prompt is None

    def answer(text: str) -> None:
        messages.append(Message("user", text))
        try:
            _fit_context(messages, tokenizer, model, args.max_new_tokens, len(system))
        except CommandError as err:
            messages.pop()
            if not interactive:
                raise
            print(f"[{err}]", file=sys.stderr)  # the session goes on
            return

        def on_token(piece) -> None:
            sys.stdout.write(piece if isinstance(piece, str) else tokenizer.decode([piece]))
            sys.stdout.flush()

        if interactive and sys.stdout.isatty():
            sys.stdout.write("assistant> ")
        try:
            reply = train.reply(model, tokenizer, messages, max_new_tokens=args.max_new_tokens,
                                temperature=args.temperature, generator=generator, on_token=on_token)
        except KeyboardInterrupt:
            messages.pop()
            sys.stdout.write("\n")
            print("[reply interrupted]", file=sys.stderr)
            if not interactive:
                raise
            return
        sys.stdout.write("\n")
        sys.stdout.flush()
        if not reply.ended:
            print(f"[the reply reached --max-new-tokens {args.max_new_tokens} before its end-of-turn token]",
                  file=sys.stderr)
        messages.append(Message("assistant", reply.text))

    if not interactive:
        for text in args.prompt:
            answer(text)
        return EXIT_OK
    tty = sys.stdin.isatty()
    if tty:
        print(f"chatting with {args.dir}: /reset forgets the conversation, /exit or Ctrl-D leaves")
    while True:
        try:
            line = input("you> " if tty else "")
        except EOFError:
            if tty:
                print()
            return EXIT_OK
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return EXIT_OK
        if text == "/reset":
            messages[:] = system
            print("[conversation reset]")
            continue
        if text.startswith("/") and " " not in text:
            print(f"[unknown command {text}: /reset or /exit]")
            continue
        answer(text)


def _fit_context(messages: list, tokenizer, model, max_new_tokens: int, keep: int) -> None:
    """Drop the oldest turns (never the system message) until prompt + reply fit max_seq_len."""
    from llm_glossary.dialog import encode_prompt

    limit = model.config.max_seq_len
    while len(encode_prompt(messages, tokenizer)) + max_new_tokens > limit:
        if len(messages) - keep <= 1:
            raise CommandError(f"the message is too long: {len(encode_prompt(messages, tokenizer))} prompt "
                               f"tokens + --max-new-tokens {max_new_tokens} exceed the model's "
                               f"{limit} tokens")
        del messages[keep : keep + 2]  # the oldest user turn and its reply
        print("[context full: forgot the oldest turn]", file=sys.stderr)


# ---------------------------------------------------------------------------- eval


def cmd_eval(args: argparse.Namespace) -> int:
    from llm_glossary import train

    device = _resolve_device(args.device)
    dialogs = _load_dialog_files(args.data, "--data", _role_map(args.role_map))
    model, tokenizer = load_model_folder(args.dir, device=device)
    ev = train.evaluate(model, dialogs, tokenizer, device=device)
    metrics: dict[str, Any] = {
        "dialogs": len(dialogs),
        "loss": ev.loss,
        "perplexity": ev.perplexity,
        "accuracy": ev.accuracy,
        "target_tokens": ev.n_tokens,
        "truncated": ev.n_truncated,
        "dropped": ev.n_dropped,
    }
    samples = _reply_samples(model, tokenizer, dialogs, args.max_new_tokens, args.max_replies)
    if samples:
        from llm_glossary.walkthrough import greedy_replies, reply_metrics

        greedy_replies(model, tokenizer, samples, max_new_tokens=args.max_new_tokens)
        metrics.update(reply_metrics(samples))
    else:
        metrics["n_replies"] = 0
    if args.json:
        plain = {k: None if isinstance(v, float) and v != v else v for k, v in metrics.items()}  # NaN -> null
        print(json.dumps(plain, ensure_ascii=False, allow_nan=False))
        return EXIT_OK
    print(f"{args.dir} on {len(dialogs)} dialogs ({ev.n_tokens} assistant tokens)")
    if ev.n_truncated or ev.n_dropped:
        print(f"  ({ev.n_truncated} dialogs longer than the model's max_seq_len shortened, {ev.n_dropped} left out)")
    print(f"  loss         {ev.loss:.4f}")
    print(f"  perplexity   {ev.perplexity:.2f}")
    print(f"  accuracy     {ev.accuracy:.1%}   (next assistant token, teacher forcing)")
    n = metrics["n_replies"]
    if n:
        print(f"  ended turn   {metrics['end_rate']:.1%}   of {n} greedy replies (<|eot_id|> within "
              f"{args.max_new_tokens} tokens)")
        print(f"  role leaks   {metrics['role_leaks']} of {n}   (replies that write another turn's header "
              "or a control token)")
        for key, count, what in (("question_exact", "n_questions", "first replies"),
                                 ("follow_up_exact", "n_follow_ups", "later replies")):
            if metrics[count]:
                print(f"  exact        {metrics[key]:.1%}   of {metrics[count]} {what} (the file's answer, word "
                      "for word)")
    return EXIT_OK


def _reply_samples(model, tokenizer, dialogs, max_new_tokens: int, max_replies: int) -> list:
    """Every assistant turn that answers a user turn, as a walkthrough ``Sample``: the
    conversation up to it is the prompt, the turn itself the expected answer. The first
    reply of a dialog counts as a "question", later ones as "follow-up"s."""
    from llm_glossary.dialog import encode_prompt
    from llm_glossary.walkthrough import Sample

    samples: list = []
    limit = model.config.max_seq_len
    for dialog in dialogs:
        first = True
        for i, message in enumerate(dialog.messages):
            if len(samples) >= max_replies:
                return samples
            if message.role != "assistant" or i == 0 or dialog.messages[i - 1].role != "user":
                continue
            prefix = dialog.messages[:i]
            if len(encode_prompt(prefix, tokenizer)) + max_new_tokens > limit:
                continue  # no room for a whole reply
            samples.append(Sample("question" if first else "follow-up", "", [(m.role, m.content) for m in prefix],
                                  message.content))
            first = False
    return samples


# ---------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from llm_glossary.checkpoint import atomic_folder

    model, tokenizer = load_model_folder(args.dir, device="cpu")
    target: Path = args.to
    if target.exists():
        if not target.is_dir():
            raise CommandError(f"--to {target}: is a file, expected a folder")
        if target.resolve() == args.dir.resolve():
            raise CommandError(f"--to {target}: is the model folder itself; choose another folder")
        if any(target.iterdir()) and not args.force:
            raise CommandError(f"--to {target}: the folder is not empty; add --force to replace it")
    with atomic_folder(target) as tmp:
        tmp = Path(tmp)
        model.save(tmp)
        _save_tokenizer(tokenizer, tmp)
        _add_special_ids(tmp, tokenizer)
    print(f"exported {args.dir} to {target}: {', '.join(sorted(p.name for p in target.iterdir()))}")
    return EXIT_OK


def _add_special_ids(folder: Path, tokenizer) -> None:
    """Token ids transformers' generate reads: stop at <|eot_id|>, pad with <|pad|>."""
    from llm_glossary.dialog import BEGIN_OF_TEXT, EOT, PAD

    bos, eot, pad = (tokenizer.piece_to_id(s) for s in (BEGIN_OF_TEXT, EOT, PAD))
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(bos_token_id=bos, eos_token_id=eot, pad_token_id=pad)
    _write_json(config_path, config)
    _write_json(folder / "generation_config.json",
                {"bos_token_id": bos, "eos_token_id": eot, "pad_token_id": pad, "do_sample": False})
