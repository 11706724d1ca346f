"""Checkpoints: one ``.npz`` file that holds a whole run, written atomically.

Inside: the weights in ``state_dict`` form (``param/0.weight`` ...), the
optimizer state, the exact position reached (epoch, iteration, part of an
epoch; the row orders and dropout masks follow from seed and epoch), the history, and as JSON the model, the run
configuration, label names and input normalisation. No pickle anywhere:
files load with ``allow_pickle=False``, and a SHA-256 checksum over every
entry tells a corrupt file from a good one.
"""

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import DataError

FORMAT = "jitprop-checkpoint"
VERSION = 1


def _checksum(meta_text, arrays):
    h = hashlib.sha256(meta_text.encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(key.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _mode_for(path):
    """The mode a rewritten file keeps, or a new file's usual 0o666 less the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    try:  # Linux shows the umask without changing it (os.umask would, briefly, for every thread)
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, write):
    """Write a file through ``write(binary_file)`` so that ``path`` is always whole:
    a temporary file beside it, flushed and fsynced, then renamed over it."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise DataError(f"cannot write {path}: directory {directory} does not exist")
    if path.is_dir():
        raise DataError(f"cannot write {path}: it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file owner-only; give it the mode the file had, or the umask's default
            os.fchmod(f.fileno(), _mode_for(path))
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def save(path, trainer, state=None, info=None):
    """Write ``trainer``'s run to ``path`` atomically.

    The weights are the model's as they are now; ``state`` (default: the
    trainer's state now) is where training continues from, which differs
    when a callback restored best weights at the end. ``info`` (default
    ``trainer.run_info``) is JSON-able run metadata: the run configuration,
    labels, feature names and so on, with arrays under ``info["arrays"]``.
    """
    meta, arrays = state if state is not None else trainer.state()
    model = trainer.model
    arrays = dict(arrays)
    if np.array_equal(arrays["params"], model.params):
        del arrays["params"]  # the same as the weights: stored once
    if np.array_equal(arrays.get("model_state"), model.state):
        del arrays["model_state"]  # the same as the running state kept with the weights
    views = {f"param/{k}": v for k, v in {**model.parameters(), **model.buffers()}.items()}
    info = dict(trainer.run_info if info is None else info)
    extra = info.pop("arrays", {})
    document = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.config(),
        "loss": {"name": trainer.loss.name, **trainer.loss.config()},
        "batch_size": trainer.batch_size,
        "seed": trainer.seed,
        "trainer": meta,
        "info": info,
    }
    meta_text = json.dumps(document, allow_nan=True)
    entries = {**views, **{f"state/{k}": v for k, v in arrays.items()}, **{f"info/{k}": v for k, v in extra.items()}}
    payload = {**entries, "meta": np.array(meta_text), "checksum": np.array(_checksum(meta_text, entries))}
    atomic_write(path, lambda f: np.savez_compressed(f, **payload))


class Checkpoint:
    """A loaded checkpoint: ``meta`` (the JSON document) and its arrays."""

    def __init__(self, path, meta, arrays):
        self.path, self.meta, self.arrays = path, meta, arrays

    @property
    def info(self):
        return self.meta.get("info", {})

    def info_array(self, name):
        return self.arrays.get(f"info/{name}")

    @property
    def history(self):
        """The run's per-epoch logs: ``{"epoch": [0, 1, ...], "history": {"loss": [...], ...}}``."""
        saved = self.meta.get("trainer", {}).get("history") or {}
        return {"epoch": list(saved.get("epoch", [])), "history": {k: list(v) for k, v in saved.get("history", {}).items()}}

    def state_dict(self):
        return {k[len("param/") :]: v for k, v in self.arrays.items() if k.startswith("param/")}

    def build_model(self):
        """The model with its saved weights."""
        from .model import Sequential

        model = Sequential.from_config(self.meta["model"])
        model.load_state_dict(self.state_dict())
        return model

    def trainer_state(self, model):
        """``(meta, arrays)`` for ``Trainer.load_state``."""
        arrays = {k[len("state/") :]: v for k, v in self.arrays.items() if k.startswith("state/")}
        arrays.setdefault("params", model.params.copy())
        arrays.setdefault("model_state", model.state.copy())
        return self.meta["trainer"], arrays


def load(path):
    """Read and verify a checkpoint; every problem is one DataError sentence."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such checkpoint file")
    if p.is_dir():
        raise DataError(f"{path}: is a directory, not a checkpoint")
    if not zipfile.is_zipfile(p):
        raise DataError(f"{path}: not a readable checkpoint, corrupt or truncated (not a zip archive)")
    try:
        with np.load(p, allow_pickle=False) as data:
            if "meta" not in data.files or "checksum" not in data.files:
                raise DataError(f"{path}: not a jitprop checkpoint (no meta/checksum entries)")
            arrays = {k: data[k] for k in data.files}
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a readable checkpoint, corrupt or truncated ({type(exc).__name__})") from None
    meta_text = str(arrays.pop("meta"))
    checksum = str(arrays.pop("checksum"))
    try:
        meta = json.loads(meta_text)
    except ValueError:
        raise DataError(f"{path}: checkpoint metadata is corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a jitprop checkpoint")
    if meta.get("version") != VERSION:
        raise DataError(f"{path}: checkpoint format version {meta.get('version')} is not supported (this jitprop reads {VERSION})")
    if _checksum(meta_text, arrays) != checksum:
        raise DataError(f"{path}: checkpoint is corrupt (checksum mismatch)")
    return Checkpoint(str(path), meta, arrays)
