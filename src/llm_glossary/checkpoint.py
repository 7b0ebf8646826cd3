"""Every file the package writes or reads: atomic writes, safetensors, checkpoint folders.

Writers never modify a file in place. A file is written under a unique temporary name in the
same folder, flushed and fsynced, then renamed over the target with ``os.replace`` (atomic on
POSIX and Windows), and the folder is fsynced so the rename itself survives a power cut. On
any failure the temporary file is removed and the previous file is untouched.

A checkpoint *folder* (config.json + model.safetensors, later optimizer and RNG state) is
built as a whole next to the target and swapped in by ``atomic_folder``; see its docstring
for exactly what a reader can observe.

Tensors are read and written by the ``safetensors`` library (the reference implementation
that transformers uses). Nothing here unpickles anything. Before the library sees a file, its
header is checked strictly by ``read_safetensors_header`` (the library accepts a few headers
that are refused here, e.g. duplicate keys), so every error a user's file can cause is a
``CheckpointError`` naming the file and, where there is one, the tensor.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import torch

__all__ = [
    "CheckpointError",
    "atomic_path",
    "atomic_file",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_folder",
    "resolve_folder",
    "read_folder",
    "read_json",
    "loads_strict",
    "check_shapes",
    "TensorInfo",
    "read_safetensors_header",
    "read_safetensors_metadata",
    "save_safetensors",
    "load_safetensors",
]


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed, or does not fit the configuration."""


# ---------------------------------------------------------------------- atomic files


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    if os.name == "nt":  # Windows cannot open a directory for fsync; NTFS journals the rename
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems refuse fsync on a directory
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _temp_name(path: Path, kind: str) -> str:
    return f".{path.name}.{kind}-"


def _fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; on success it replaces ``path`` atomically.

    For writers that take a file name (the safetensors library). The block writes the yielded
    path; when it ends without an exception the file is fsynced and renamed over ``path``
    (``os.replace``), then the folder is fsynced. When the block or the fsync raises (a full
    disk), the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a file path to write")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_name(path, "tmp"), suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", *, encoding: str | None = None) -> Iterator[Any]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically.

    The block writes to the yielded file object. When the block ends without an exception the
    file is flushed, fsynced and renamed over ``path`` (``os.replace``), then the folder is
    fsynced. When the block (or the flush, e.g. a full disk) raises, the temporary file is
    removed and ``path`` keeps its previous content, byte for byte.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_file(p, "w", encoding="utf-8") as f:
        ...     _ = f.write("hello")
        >>> p.read_text()
        'hello'
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding, newline="" if mode == "w" else None) as f:
            yield f
            f.flush()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see ``atomic_file``); returns the path."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write_bytes needs bytes, got {type(data).__name__}")
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically, encoded as UTF-8 by default; returns the path."""
    if not isinstance(text, str):
        raise TypeError(f"atomic_write_text needs a str, got {type(text).__name__}")
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as standard JSON (no NaN/Infinity, UTF-8, final newline) atomically."""
    try:
        text = json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError as e:  # NaN or Infinity: not JSON, other readers refuse it
        raise ValueError(f"{path}: cannot write {e} as standard JSON") from None
    return atomic_write_text(path, text + "\n")


# ---------------------------------------------------------------------- atomic folders

_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux renameat2(RENAME_EXCHANGE); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # no glibc >= 2.28
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):  # file system cannot
        return False
    raise OSError(err, os.strerror(err), str(b))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # files are only ever replaced, never edited, so sharing is safe
    except OSError:
        shutil.copy2(src, dst)


_LEFTOVER = re.compile(r"^\..+\.(tmp|new|old)-")  # the hidden names the writers here use


def _carry_over(old: Path, new: Path) -> None:
    """Bring every entry of ``old`` that ``new`` lacks into ``new`` (hard links where possible)."""
    for entry in old.iterdir():
        target = new / entry.name
        if target.exists() or target.is_symlink() or _LEFTOVER.match(entry.name):
            continue  # written anew, or a temporary name of an interrupted write
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(target))


def _swap_in(new: Path, path: Path) -> None:
    """Put the finished folder ``new`` at ``path``; remove what was there before."""
    for _ in range(100):  # only loops while other writers race for the same path
        if not path.exists():
            try:
                os.rename(new, path)  # atomic; fails if another writer got there first
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    continue
                raise
            return
        if _exchange(new, path):  # Linux: `path` is never missing, not even for an instant
            old = new.with_name(new.name.replace(".new-", ".old-", 1))
            os.rename(new, old)
            shutil.rmtree(old, ignore_errors=True)
            return
        # Elsewhere: move the old folder aside, then move the new one in. A crash between the two
        # renames leaves no `path`, but a complete `.NAME.old-*` (old) and `.NAME.new-*` (new):
        # ``resolve_folder`` finds the new one.
        aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_name(path, "old")))
        try:
            os.replace(path, aside)
        except FileNotFoundError:  # another writer moved it first
            aside.rmdir()
            continue
        try:
            os.rename(new, path)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):  # another writer's folder is in place
                shutil.rmtree(aside, ignore_errors=True)
                continue
            with contextlib.suppress(OSError):
                os.rename(aside, path)  # put the old folder back
            raise
        shutil.rmtree(aside, ignore_errors=True)
        return
    raise CheckpointError(f"{path}: could not swap the new folder in (too many concurrent writers)")


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, carry_over: bool = False) -> Iterator[Path]:
    """Build a new folder next to ``path``; on success it replaces ``path`` as a whole.

    The block writes its files into the yielded temporary folder ``.NAME.tmp-XXXX`` (in the same
    parent, so renames stay on one file system). When the block raises, that folder is removed
    and ``path`` is untouched. When it succeeds, every file in it is fsynced, it is renamed to
    ``.NAME.new-XXXX`` (marking it complete) and swapped in:

    - Linux: ``renameat2(RENAME_EXCHANGE)`` swaps the two folders in one atomic step, then the
      old one (now ``.NAME.old-XXXX``) is removed. ``path`` always exists and is always one
      complete folder, old or new.
    - Elsewhere (or a file system without the exchange): ``path`` is renamed aside to
      ``.NAME.old-XXXX``, the new folder is renamed to ``path``, the old one is removed. Between
      the two renames ``path`` is missing for an instant; a crash there leaves it missing with
      both complete folders beside it, and ``resolve_folder(path)`` (which ``Llama.load``
      uses) returns the newest ``.NAME.new-*``.

    A reader that opens the folder's files one by one by path could still straddle a swap
    (config.json from the old folder, weights from the new one); ``read_folder`` (which
    ``Llama.load`` uses) prevents that: on Linux it holds the folder open so every file comes
    from the same one, elsewhere it repeats a read during which the folder changed. Two
    concurrent writers each swap in a complete folder; the last one wins. Leftovers of a crash are hidden names (``.NAME.tmp-*``: never
    complete; ``.NAME.new-*`` / ``.NAME.old-*``: complete) that may be deleted at any time.

    Args:
        path: the folder to replace (created if missing; its parent must exist or is created).
        carry_over: keep the entries of the old folder that the block did not write (hard
            links), e.g. a tokenizer.json saved into a model folder. Off by default: the new
            folder replaces the old one exactly.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path}: exists and is not a folder; cannot write a checkpoint folder there")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_name(path, "tmp")))
    try:
        yield tmp
        if carry_over and path.is_dir():
            _carry_over(path, tmp)
        for root, _dirs, files in os.walk(tmp):
            for name in files:
                _fsync_file(os.path.join(root, name))
            _fsync_folder(Path(root))
        new = tmp.with_name(tmp.name.replace(".tmp-", ".new-", 1))
        os.rename(tmp, new)
        tmp = new
        _swap_in(new, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_folder(path.parent)


def resolve_folder(path: str | Path) -> Path:
    """``path`` if it is a folder, else the newest complete folder a crashed swap left beside it.

    Raises CheckpointError when neither exists (or ``path`` is a file).
    """
    path = Path(path)
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path}: is a file, expected a checkpoint folder")
    if path.parent.is_dir():
        left = [p for p in path.parent.glob(glob.escape(_temp_name(path, "new")) + "*") if p.is_dir()]
        left = left or [p for p in path.parent.glob(glob.escape(_temp_name(path, "old")) + "*") if p.is_dir()]
        if left:
            return max(left, key=lambda p: p.stat().st_mtime_ns)
    raise CheckpointError(f"{path}: no such file or folder")


def read_folder(path: str | Path, reader: Callable[[Path], Any], *, attempts: int = 20) -> Any:
    """Call ``reader(folder)`` and return its result, read from one complete folder.

    On Linux the folder is held open and ``reader`` gets a path through that handle
    (``/proc/self/fd/N``), so every file it opens comes from the same folder even if a writer
    swaps a new one in meanwhile; if the old folder's files are deleted before ``reader`` opened
    them, the read is repeated. Elsewhere the folder's identity (inode) is compared before and
    after, and a read that straddled a swap is repeated. Error messages name ``path``'s folder.
    """
    pinned = sys.platform.startswith("linux") and Path("/proc/self/fd").is_dir()
    for _ in range(attempts):
        folder = resolve_folder(path)
        try:
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:
            continue  # swapped out between resolve and open
        try:
            before = os.fstat(fd).st_ino
            handle = Path(f"/proc/self/fd/{fd}") if pinned else folder
            try:
                result = reader(handle)
            except CheckpointError as e:
                if _unchanged(folder, before):
                    raise CheckpointError(str(e).replace(str(handle), str(folder))) from None
                continue  # a file vanished because the folder was swapped out: read again
            if pinned or _unchanged(folder, before):
                return result
        finally:
            os.close(fd)
    raise CheckpointError(f"{path}: the folder changed during {attempts} reads in a row (a writer is busy)")


def _unchanged(folder: Path, ino: int) -> bool:
    try:
        return os.stat(folder).st_ino == ino
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------- strict JSON


def _reject_constant(name: str):
    raise ValueError(f"{name} is not standard JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _parse_int(text: str) -> int:
    if len(text) > 40:  # no size or offset needs more; Python refuses > 4300 digits anyway
        raise ValueError(f"integer with {len(text)} digits")
    return int(text)


def _json_problem(text: str | bytes) -> tuple[Any, str | None]:
    """(value, None) for standard JSON, else (None, what is wrong)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, f"not UTF-8 text (byte {e.start})"
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates, parse_int=_parse_int), None
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
    except RecursionError:
        return None, "not valid JSON (nested too deeply)"
    except ValueError as e:
        return None, f"not valid JSON ({e})"


def loads_strict(text: str | bytes, source: str) -> Any:
    """Parse standard JSON: no NaN/Infinity, no duplicate keys, no huge integers, bounded depth.

    Raises CheckpointError starting with ``source``.
    """
    value, problem = _json_problem(text)
    if problem:
        raise CheckpointError(f"{source}: {problem}")
    return value


def read_json(path: str | Path) -> Any:
    """Read a JSON file strictly (see ``loads_strict``); every failure is a CheckpointError."""
    path = Path(path)
    return loads_strict(_read_bytes(path), str(path))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, expected a file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None


# ---------------------------------------------------------------------- safetensors

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64")):
    if hasattr(torch, _attr):
        _ST_DTYPES[_name] = getattr(torch, _attr)
_MAX_HEADER = 100_000_000  # the library's own limit


class TensorInfo(NamedTuple):
    """One tensor's entry in a safetensors header; ``start``/``end`` are offsets into the data."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str], os.stat_result]:
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a safetensors file")
    try:
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())  # of the very file read here (its inode identifies it)
            size = stat.st_size
            first = f.read(8)
            if len(first) < 8:
                raise CheckpointError(f"{path}: too short to be a safetensors file ({size} bytes)")
            n = int.from_bytes(first, "little")
            if n > _MAX_HEADER or 8 + n > size:
                raise CheckpointError(f"{path}: header size {n} exceeds the file ({size} bytes) or the 100 MB limit: not a safetensors file")
            raw = f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    header, problem = _json_problem(raw)
    if problem:
        raise CheckpointError(f"{path}: header is {problem}: not a safetensors file")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: __metadata__ must map strings to strings, got {metadata!r:.80}")
    data_len = size - 8 - n
    infos: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{where}: entry must be an object with dtype, shape and data_offsets, got {entry!r:.80}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _ST_DTYPES:
            raise CheckpointError(f"{where}: unknown dtype {dtype!r}; expected one of {sorted(_ST_DTYPES)}")
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise CheckpointError(f"{where}: shape must be a list of integers >= 0, got {shape!r:.80}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise CheckpointError(f"{where}: data_offsets must be two integers, got {offsets!r:.80}")
        start, end = offsets
        nbytes = math.prod(shape) * torch.empty(0, dtype=_ST_DTYPES[dtype]).element_size()
        if not 0 <= start <= end <= data_len or end - start != nbytes:
            raise CheckpointError(
                f"{where}: bytes {start}..{end} do not hold shape {shape} {dtype} ({nbytes} bytes) "
                f"inside the {data_len} data bytes"
            )
        infos[name] = TensorInfo(_ST_DTYPES[dtype], tuple(shape), start, end)
    ordered = sorted(infos.items(), key=lambda kv: (kv[1].start, kv[1].end))
    for (_, before), (name, info) in zip(ordered, ordered[1:]):  # two tensors sharing bytes
        if info.start < before.end:
            raise CheckpointError(f"{path}: tensor {name!r} (bytes {info.start}..{info.end}) overlaps the previous tensor")
    position = 0  # the tensors must tile the data exactly: no gap, nothing after
    for name, info in ordered:
        if info.start != position:
            raise CheckpointError(f"{path}: tensor {name!r} (bytes {info.start}..{info.end}) leaves a gap of {info.start - position} bytes")
        position = info.end
    if position != data_len:
        raise CheckpointError(f"{path}: {data_len - position} bytes after the last tensor: not a valid safetensors file")
    return infos, metadata, stat


def read_safetensors_header(path: str | Path) -> dict[str, TensorInfo]:
    """Each tensor's dtype, shape and byte range, read from the header alone (no data loaded).

    The header is checked strictly: standard JSON without duplicate keys, known dtypes,
    shapes of integers >= 0, and byte ranges that match the shapes and tile the data exactly
    (no overlap, no gap, no trailing bytes).
    """
    return _read_header(Path(path))[0]


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The header's ``__metadata__`` (string to string), checked like the rest of the header."""
    return _read_header(Path(path))[1]


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write tensors with the safetensors library, atomically (see ``atomic_file``).

    Raises CheckpointError naming the tensor for a non-tensor value or a dtype the format
    cannot hold, before anything is written.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if not isinstance(tensors, dict):
        raise CheckpointError(f"{path}: tensors must be a dict of name -> tensor, got {type(tensors).__name__}")
    known = set(_ST_DTYPES.values())
    prepared = {}
    for name, t in tensors.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{path}: tensor names must be strings, got {name!r}")
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{path}: tensor {name!r} is a {type(t).__name__}, not a torch.Tensor")
        if t.dtype not in known:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {t.dtype}, which this project does not store in safetensors")
        prepared[name] = t.detach().to("cpu").contiguous()
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise CheckpointError(f"{path}: metadata must map strings to strings, got {metadata!r:.80}")
    with atomic_path(path) as tmp:
        try:
            save_file(prepared, str(tmp), metadata=metadata)
        except (ValueError, RuntimeError) as e:  # e.g. tensors sharing memory
            raise CheckpointError(f"{path}: {e}".splitlines()[0]) from None
    return path


def load_safetensors(path: str | Path, *, expected: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file (no pickle: a JSON header and raw bytes).

    The header is checked first (``read_safetensors_header``); with ``expected`` (name → shape)
    every name and shape is compared before any tensor is read, so a wrong file costs nothing.
    The file is read through the safetensors library; if it is replaced while being read, the
    read is repeated, so the result comes from one file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    for _ in range(5):
        infos, _meta, stat = _read_header(path)
        if expected is not None:
            check_shapes(infos, expected, str(path))
        out: dict[str, torch.Tensor] = {}
        name = None
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for name in infos:
                    out[name] = f.get_tensor(name)
        except FileNotFoundError:  # deleted (its folder swapped out): read_folder reads again
            raise CheckpointError(f"{path}: no such file") from None
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            where = f"tensor {name!r}: " if name else ""
            raise CheckpointError(f"{path}: {where}{e}".splitlines()[0]) from None
        try:
            now = os.stat(path)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such file") from None
        if (now.st_dev, now.st_ino) == (stat.st_dev, stat.st_ino):
            return out  # header and tensors came from the same file
    raise CheckpointError(f"{path}: the file was replaced during 5 reads in a row (a writer is busy)")


def check_shapes(infos: dict[str, TensorInfo], expected: dict[str, tuple[int, ...]], source: str) -> None:
    """Compare a header's tensor names and shapes with the expected ones; one clear error."""
    missing = sorted(set(expected) - set(infos))
    unexpected = sorted(set(infos) - set(expected))
    if missing:
        raise CheckpointError(f"{source}: missing tensors {missing[:5]}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        raise CheckpointError(f"{source}: unexpected tensors {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
    for name, want in expected.items():
        if tuple(infos[name].shape) != tuple(want):
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(infos[name].shape)}, but the config needs {tuple(want)}"
            )
