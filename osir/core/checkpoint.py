"""Checkpoint files.

Network weights are safetensors; training states (optimisers, schedulers, iteration, and the
list of weight files that belong to the state) are torch files read back with
``weights_only=True``, so loading executes no pickled code.  Every write goes to a temporary file
in the same folder, is fsync'ed and renamed into place (and the folder fsync'ed), so a crash
mid-write never leaves a truncated checkpoint under the final name; the file gets the permissions
of any file the user creates (``0o666`` less the umask), not the temporary file's ``0o600``.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from osir.core.errors import CheckpointError   # noqa: F401  (re-exported: the checkpoint I/O's error)


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: the temporary files of ``atomic_write``: ``.<final name>.<mkstemp's 8 characters>.tmp`` beside the final file
TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def write_failure(err: BaseException, folder: Path) -> str | None:
    """Why writing a file into ``folder`` failed, when the file system refused it (a full disk, no permission),
    in one short clause: an ``OSError``'s reason, safetensors' ``I/O error: ...``, torch's stream-writer failure
    (which does not say why: a full disk is told by the space left); None for any other error (a bug, which
    keeps its traceback)."""
    if isinstance(err, OSError):
        return err.strerror or str(err)
    text = " ".join(str(err).split())
    found = re.search(r"I/O error: (.+?)(?: \(os error \d+\))?(?: at path|$)", text)      # safetensors
    if found:
        return found.group(1)
    if isinstance(err, RuntimeError) and ("PytorchStreamWriter" in text or "inline_container" in text):
        if shutil.disk_usage(folder).free < 1 << 20:
            return f"No space left on device ({shutil.disk_usage(folder).free} bytes free)"
        return f"torch could not write it ({text[:120]})"
    return None


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path`` (with the permissions
    ``open`` would give it: ``mkstemp`` creates the temporary file readable by its owner only).
    A process killed before the rename leaves the temporary file (``TEMPORARY``); see ``remove_orphans``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except Exception as err:
            reason = write_failure(err, path.parent)
            if reason is None:
                raise
            failed = OSError(f"cannot write '{path}': {reason}")
            failed.errno = getattr(err, "errno", None)
            raise failed from None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_orphans(folder: str | Path) -> list[Path]:
    """Remove the temporary files that ``atomic_write`` left anywhere under ``folder`` when its process was
    killed during a save (nothing else writes there while the experiment's lock is held); returns them."""
    folder = Path(folder)
    orphans = sorted(p for p in folder.rglob(".*.tmp") if p.is_file() and TEMPORARY.fullmatch(p.name)) \
        if folder.is_dir() else []
    for p in orphans:
        p.unlink(missing_ok=True)
    return orphans


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """``Path.write_text`` through ``atomic_write``: a reader never sees half a file, and a failed write (a full
    disk) leaves the earlier file and raises one line naming the file."""
    data = text.encode(encoding)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def archive_folder(folder: str | Path) -> Path | None:
    """Move an existing ``folder`` aside to ``<name>_archived_<YYYYmmdd_HHMMSS>`` (``_2``, ``_3``, ...
    when that exists too) and return the new path; None when ``folder`` does not exist.  A training
    run starting afresh does this with its experiment folder, ``osir test`` with its results folder."""
    folder = Path(folder)
    if not folder.exists():
        return None
    base = folder.with_name(f"{folder.name}_archived_{time.strftime('%Y%m%d_%H%M%S')}")
    target, n = base, 1
    while target.exists():
        n += 1
        target = base.with_name(f"{base.name}_{n}")
    shutil.move(str(folder), str(target))
    return target


def save_state_dict(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write a state dict as safetensors, atomically.  Tensors that share storage (tied or aliased
    weights, e.g. open_clip's duplicated ``visual.*`` in DA-CLIP's release) are written as copies:
    safetensors refuses shared storage, and on a CPU ``.cpu()`` does not copy."""
    seen, out = set(), {}
    for key, value in state.items():
        tensor = value.detach().to("cpu").contiguous()
        ptr = (tensor.untyped_storage().data_ptr(), tensor.storage_offset()) if tensor.numel() else None
        if ptr is not None and (ptr in seen or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size()):
            tensor = tensor.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[key] = tensor
    atomic_write(path, lambda tmp: save_file(out, tmp))


def save_network(module: nn.Module, path: str | Path) -> None:
    save_state_dict(module.state_dict(), path)


#: containers a released torch checkpoint keeps its weights in (BasicSR's ``params_ema`` / ``params``, ...)
STATE_DICT_WRAPPERS = ("params_ema", "params", "state_dict")


def pickled_code_refusal(path, err: BaseException) -> str | None:
    """One line for a file that torch's weights-only unpickler refused because its pickle calls a
    function or class beyond tensors (possibly code), or None when ``err`` is another failure (a
    corrupt or truncated file)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err)) if isinstance(err, pickle.UnpicklingError) else None
    if found is None:
        return None
    return (f"refused '{path}': not a weights-only file (it would call {found.group(1)}); osir runs no pickled "
            f"code: convert the file where you trust it (load it with torch, save its tensors with safetensors)")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def torch_load_reason(err: BaseException) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused, in one short clause: torch's
    own reason without its terminal colour codes and without its general advice (re-running with
    ``weights_only=False``, which would run the file's pickled code; filing an issue)."""
    text = " ".join(_ANSI.sub("", str(err)).split())
    found = re.search(r"WeightsUnpickler error: (.+?)(?: Check the documentation|$)", text)
    if found:
        return (f"torch's weights-only reader refused its pickle ({found.group(1).strip()[:100]}); osir does not "
                f"load pickled code: convert the file where you trust it (load it with torch, save its tensors "
                f"with safetensors)")
    first = re.split(r"(?<=\.) ", text, maxsplit=1)[0][:160]
    return first if isinstance(err, RuntimeError) and first else f"{type(err).__name__}: {first}".rstrip(": ")


def _torch_load(path):
    """``torch.load(weights_only=True)`` on the CPU, without torch's multi-line warning about a pickle
    protocol it did not write (the refusal that follows says what is wrong)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(path, map_location="cpu", weights_only=True)


def _nonfinite(payload, prefix: str = ""):
    """(key, NaN count, Inf count, size) of every floating-point tensor in ``payload`` (nested dicts, lists and
    tuples; keys joined with '.') that holds NaN or Inf."""
    if torch.is_tensor(payload):
        if (payload.is_floating_point() or payload.is_complex()) and not bool(torch.isfinite(payload).all()):
            nan = int(torch.isnan(payload).sum())
            yield prefix or "(the tensor)", nan, int((~torch.isfinite(payload)).sum()) - nan, payload.numel()
    elif isinstance(payload, dict):
        for key, value in payload.items():
            yield from _nonfinite(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(payload, (list, tuple)):
        for i, value in enumerate(payload):
            yield from _nonfinite(value, f"{prefix}.{i}" if prefix else str(i))


def check_finite_weights(payload, path, what: str = "weights file", limit: int = 3):
    """``payload`` when its floating-point tensors are all finite; otherwise a ``CheckpointError`` naming the
    file and the tensors holding NaN or Inf (weights of a diverged run, or a broken conversion): loading them
    would only show later, as a non-finite loss or output."""
    bad = list(_nonfinite(payload))
    if not bad:
        return payload
    def count(nan, inf, numel):
        return ", ".join([f"{nan} NaN"] * bool(nan) + [f"{inf} Inf"] * bool(inf)) + f" of {numel}"
    shown = ", ".join(f"{key} ({count(nan, inf, numel)})" for key, nan, inf, numel in bad[:limit])
    more = f" ... (+{len(bad) - limit} more tensors)" if len(bad) > limit else ""
    raise CheckpointError(f"{what} '{path}' holds non-finite values in {shown}{more}")


def read_weights_file(path: str | Path):
    """The payload of a safetensors file or of a torch file read with ``weights_only=True`` (no pickled code
    runs); ``path`` must exist.  An unreadable file, or one whose tensors hold NaN or Inf
    (``check_finite_weights``), is a ``CheckpointError`` naming it."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return check_finite_weights(load_file(str(path)), path)
        except CheckpointError:
            raise
        except Exception as err:   # SafetensorError: truncated or not safetensors
            raise CheckpointError(f"cannot read '{path}' as safetensors: {err}") from None
    try:
        payload = _torch_load(path)
    except CheckpointError:      # refused inside osir.core.weights.weights_only_loads: already one line
        raise
    except Exception as err:
        raise CheckpointError(pickled_code_refusal(path, err)
                              or f"cannot read '{path}' as a weights-only torch file: "
                                 f"{torch_load_reason(err)}") from None
    return check_finite_weights(payload, path)


def unwrap_state_dict(payload) -> tuple[dict[str, torch.Tensor] | None, list[str]]:
    """(the tensors of a weights payload, notes on what was unwrapped): the first ``STATE_DICT_WRAPPERS``
    entry that is a dict, without a DDP ``module.`` prefix; None when that is not a dict of tensors."""
    state, notes = payload, []
    for key in STATE_DICT_WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            notes.append(f"the weights are the file's '{key}' entry")
            state = state[key]
            break
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        return None, notes
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
        notes.append("the DDP 'module.' prefix is removed")
    return dict(state), notes


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch file (``weights_only=True``); unwraps the
    ``params_ema`` / ``params`` / ``state_dict`` containers and a DDP ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: '{path}'")
    state, _ = unwrap_state_dict(read_weights_file(path))
    if state is None:
        raise CheckpointError(f"'{path}' does not hold a state dict of tensors")
    return state


def describe_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], limit: int = 5) -> str:
    """'' if keys and shapes agree, else a short account of what differs."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(given[k].shape)} vs network {tuple(expected[k].shape)}"
              for k in expected if k in given and given[k].shape != expected[k].shape]
    parts = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {title}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def load_network(module: nn.Module, path: str | Path, strict: bool = True,
                 state: dict[str, torch.Tensor] | None = None) -> None:
    """Load weights into ``module``; with ``strict`` any key or shape difference is refused with
    a message saying what differs (without it, matching tensors load and the rest is reported)."""
    state = read_state_dict(path) if state is None else state
    expected = module.state_dict()
    diff = describe_mismatch(expected, state)
    if diff and strict:
        raise CheckpointError(f"'{path}' does not fit {type(module).__name__}: {diff}")
    usable = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    module.load_state_dict(usable, strict=False)


def save_training_state(state: dict, path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_torch_file(path: str | Path, what: str):
    """``torch.load(weights_only=True)`` on the CPU; a missing or unreadable file, or one whose tensors hold
    NaN or Inf, is a ``CheckpointError`` naming it (``what``: 'training state', 'OSEDiff weights', ...)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: '{path}'")
    try:
        payload = _torch_load(path)
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(pickled_code_refusal(path, err)
                              or f"cannot read {what} '{path}' as a weights-only torch file: "
                                 f"{torch_load_reason(err)}") from None
    return check_finite_weights(payload, path, what)


def load_training_state(path: str | Path) -> dict:
    """Read a training state; a missing or unreadable file is a ``CheckpointError`` naming it."""
    state = load_torch_file(path, "training state")
    if not isinstance(state, dict) or "iter" not in state:
        raise CheckpointError(f"'{path}' is not an osir training state")
    return state


def states_newest_first(folder: str | Path) -> list[Path]:
    """The training states in ``folder`` (``<iter>.state``), highest iteration first."""
    folder = Path(folder)
    states = [p for p in folder.glob("*.state") if re.fullmatch(r"\d+", p.stem)] if folder.is_dir() else []
    return sorted(states, key=lambda p: int(p.stem), reverse=True)


def latest_state(folder: str | Path) -> Path | None:
    """The training state with the highest iteration in ``folder``."""
    states = states_newest_first(folder)
    return states[0] if states else None


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")


def sha256(path: str | Path) -> str:
    """sha256 of a file; of a folder (a diffusers/transformers model), the hash of its weight files'
    relative names and hashes (all files when it has no weight file)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        weights = [p for p in files if p.suffix in WEIGHT_SUFFIXES] or files
        h = hashlib.sha256()
        for p in weights:
            h.update(f"{p.relative_to(path).as_posix()} {sha256(p)}\n".encode())
        return h.hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
