"""Checkpoints: one ``.npz`` file that holds a whole run, written atomically.

Inside: the weights in ``state_dict`` form (``param/0.weight`` ...), the
optimizer state, the exact position reached (epoch, iteration, part of an
epoch; the row orders and dropout masks follow from seed and epoch), the history, and as JSON the model, the run
configuration, label names and input normalisation. No pickle anywhere:
files load through ``data.load_npz``, which never unpickles and checks every
declared size before allocating; a SHA-256 checksum over every entry tells a
corrupt file from a good one, and a structure check a crafted one.
"""

import hashlib
import io
import json
import math
import os
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError, JitpropError
from .arrays import load_npz, one_line

FORMAT = "jitprop-checkpoint"
#: 2: the history as arrays (``state/epoch``, ``state/history``, the recent ``state/iteration_loss`` and
#: the older iterations' ``state/iteration_summary``), where 1 kept it as JSON lists in the meta document,
#: rewritten whole at every save (a checkpoint every epoch slowed a long run from 150 to 30 epochs/s).
#: Version 1 files still load; their history is read from the lists.
VERSION = 2


def _checksum(meta_text, arrays):
    h = hashlib.sha256(meta_text.encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(key.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        try:
            h.update(a.data)  # its bytes, as tobytes() gives them, without copying a long history
        except (ValueError, TypeError):  # a dtype with no buffer form (datetime64, in a crafted file)
            h.update(a.tobytes())
    return h.hexdigest()


def current_umask():
    """The process's umask, read without changing it where Linux shows it (os.umask would
    change it, briefly, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0)
        os.umask(mask)
        return mask


def _mode_for(path):
    """The mode a rewritten file keeps, or a new file's usual 0o666 less the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def _remove_orphans(directory, name):
    """Delete temporary files an earlier writer of ``name`` left when it was killed mid-write
    (its process is gone), so crashes don't litter the directory."""
    prefix = f".{name}."
    try:
        entries = [e for e in os.scandir(directory) if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running: a concurrent writer, not an orphan
        except ProcessLookupError:
            pass
        except OSError:  # another user's live process
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            pass


def write_target(path, what=""):
    """Where writing ``path`` lands and how, or a one-line DataError before anything is written:
    ``(target, regular)``. A symlink is followed, so the file it points to is the one rewritten
    (atomically, in its own directory) and the link stays; ``regular`` is False for a device or
    FIFO that already exists, which is opened and written as it is, never replaced by a file
    (``-o /dev/null`` as root would otherwise destroy the device node). A regular file with no
    write bit for anyone is refused, root included: replacing it would defeat its read-only mode."""
    name = f"{what} {path}" if what else f"{path}"
    target = os.path.realpath(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise DataError(f"cannot write {name}: {exc.strerror or exc}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise DataError(f"cannot write {name}: it is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        return target, False
    if st is not None and (not st.st_mode & 0o222 or not os.access(target, os.W_OK)):
        raise DataError(f"cannot write {name}: it is read-only")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise DataError(f"cannot write {name}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise DataError(f"cannot write {name}: directory {directory} is not writable")
    return target, True


def _write_directly(path, target, write):
    """Write into an existing device or FIFO, as ``cat > target`` would: no O_CREAT, no rename."""
    try:
        with open(os.open(target, os.O_WRONLY | os.O_NOCTTY), "wb") as f:
            write(f)
            f.flush()
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None


def atomic_write(path, write):
    """Write a file through ``write(binary_file)`` so that ``path`` is always whole:
    a temporary file beside the file (beside a symlink's target), flushed and fsynced, then
    renamed over it. An existing device or FIFO is written directly (``write_target``)."""
    target, regular = write_target(path)
    if not regular:
        return _write_directly(path, target, write)
    directory, name = os.path.split(target)
    _remove_orphans(directory, name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file owner-only; give it the mode the file had, or the umask's default
            os.fchmod(f.fileno(), _mode_for(target))
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
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
    # Stored, not deflated: weights barely compress, and the history grows with the run, so
    # compressing it again at every epoch's checkpoint made long runs slower epoch by epoch.
    atomic_write(path, lambda f: np.savez(f, **payload))


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
        if "metrics" in saved:
            table = self.arrays["state/history"]
            return {"epoch": self.arrays["state/epoch"].tolist(), "history": {k: row.tolist() for k, row in zip(saved["metrics"], table)}}
        return {"epoch": list(saved.get("epoch", [])), "history": {k: list(v) for k, v in saved.get("history", {}).items()}}

    def state_dict(self):
        return {k[len("param/") :]: v for k, v in self.arrays.items() if k.startswith("param/")}

    def build_model(self):
        """The model with its saved weights."""
        from ..model.sequential import Sequential

        try:
            model = Sequential.from_config(self.meta["model"])
        except JitpropError:
            raise
        except (MemoryError, ValueError) as exc:  # widths no array can have: 10**30 units, say
            raise DataError(f"{self.path}: its model cannot be built ({type(exc).__name__}: {one_line(exc)})") from None
        model.load_state_dict(self.state_dict())
        labels = self.info.get("labels")
        if labels is not None and len(labels) != model.output_dim:
            raise DataError(f"{self.path}: names {len(labels)} class labels for a model with {model.output_dim} outputs")
        mean = self.info_array("target_mean")
        if mean is not None and mean.shape != (model.output_dim,):
            raise DataError(f"{self.path}: standardises {mean.size} target values for a model with {model.output_dim} outputs")
        return model

    def trainer_state(self, model):
        """``(meta, arrays)`` for ``Trainer.load_state``."""
        arrays = {k[len("state/") :]: v for k, v in self.arrays.items() if k.startswith("state/")}
        arrays.setdefault("params", model.params.copy())
        arrays.setdefault("model_state", model.state.copy())
        return self.meta["trainer"], arrays


def read(path):
    """A checkpoint file's bytes (for ``load(path, data=...)`` elsewhere), or a one-line DataError."""
    _check_file(Path(path), path)
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the checkpoint: {exc.strerror or exc}") from None


def _check_file(p, path):
    if not p.exists():
        raise DataError(f"{path}: no such checkpoint file")
    if p.is_dir():
        raise DataError(f"{path}: is a directory, not a checkpoint")


def load(path, data=None):
    """Read and verify a checkpoint; every problem is one DataError sentence. ``data``: the file's
    bytes, read elsewhere (by rank 0 of a data-parallel run); ``path`` then only names it."""
    if data is None:
        p = Path(path)
        _check_file(p, path)
    else:
        p = io.BytesIO(data)
    if not zipfile.is_zipfile(p):
        raise DataError(f"{path}: not a readable checkpoint, corrupt or truncated (not a zip archive)")
    arrays = load_npz(p, "not a readable checkpoint, corrupt or truncated", name=str(path))
    if "meta" not in arrays or "checksum" not in arrays:
        raise DataError(f"{path}: not a jitprop checkpoint (no meta/checksum entries)")
    meta, checksum = arrays.pop("meta"), arrays.pop("checksum")
    if meta.shape or meta.dtype.kind != "U" or checksum.shape or checksum.dtype.kind != "U":
        raise DataError(f"{path}: checkpoint metadata is corrupt (meta and checksum must be text)")
    meta_text, checksum = str(meta), str(checksum)
    try:
        meta = json.loads(meta_text)
    except (ValueError, RecursionError):  # RecursionError: brackets nested thousands deep
        raise DataError(f"{path}: checkpoint metadata is corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a jitprop checkpoint")
    if not (_is(meta.get("version"), int) and 1 <= meta["version"] <= VERSION):
        raise DataError(f"{path}: checkpoint format version {meta.get('version')} is not supported (this jitprop reads 1 to {VERSION})")
    if _checksum(meta_text, arrays) != checksum:
        raise DataError(f"{path}: checkpoint is corrupt (checksum mismatch)")
    # The checksum finds damage, not intent: anyone can write a matching one. So the structure
    # that Checkpoint, the command line and Trainer.load_state rely on is checked too.
    problem = _problem(meta, arrays)
    if problem:
        raise DataError(f"{path}: not a checkpoint jitprop can use ({problem})")
    return Checkpoint(str(path), meta, arrays)


def _is(value, kinds):
    """isinstance, where true and false are not numbers."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


NUMBER = (int, float)
#: Where in the JSON document -> what must be there: the parts jitprop reads back.
_META = {
    "model": dict, "model.input_dim": int, "model.dtype": str, "model.layers": list,
    "loss": dict, "loss.name": str, "info": dict,
    "trainer": dict, "trainer.seed": int, "trainer.epoch": int, "trainer.step": int, "trainer.lr": NUMBER,
    "trainer.optimizer": dict, "trainer.optimizer.name": str, "trainer.optimizer.lr": NUMBER, "trainer.callbacks": dict,
    "trainer.history": dict,
}  # fmt: skip
#: The history's part of the document, by format version.
_HISTORY = {
    1: {"trainer.history.history": dict, "trainer.history.epoch": list},
    2: {"trainer.history.metrics": list, "trainer.history.iteration_block": int, "trainer.history.iterations_folded": int},
}
#: Optional entries of ``info`` (null allowed) and of a part-way epoch's ``trainer.progress``.
_INFO = {"config": dict, "labels": list, "feature_names": list, "target_name": str, "task": str, "columns": list,
         "fill": str}
_PROGRESS = {"batch": int, "loss_sum": NUMBER, "correct": NUMBER, "seen": NUMBER, "lr": NUMBER}


def _problem(meta, arrays):
    """What is missing or of the wrong kind in a checkpoint's document and arrays, or None."""
    for where, kinds in {**_META, **_HISTORY[meta["version"]]}.items():
        value = meta
        for key in where.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if not _is(value, kinds):
            return f"{where} is {type(value).__name__}"
    if not all(isinstance(spec, dict) and isinstance(spec.get("name"), str) for spec in meta["model"]["layers"]):
        return "model.layers must be tables with a name"
    shape = meta["model"].get("input_shape")  # absent in checkpoints of 0.1.0: flat
    if shape is not None and not (isinstance(shape, list) and shape and all(_is(d, int) and d > 0 for d in shape)
                                  and math.prod(shape) == meta["model"]["input_dim"]):  # fmt: skip
        return "model.input_shape does not fit model.input_dim"
    for key, kinds in _INFO.items():
        value = meta["info"].get(key)
        if value is not None and not _is(value, kinds):
            return f"info.{key} is {type(value).__name__}"
    for key in ("labels", "feature_names"):
        if not all(isinstance(v, str) for v in meta["info"].get(key) or []):
            return f"info.{key} must be text"
    for key, a in arrays.items():
        if a.dtype.kind not in "biuf":
            return f"array {key!r} holds {a.dtype}, not numbers"
    for key in ("state/opt_state", "state/iteration_loss"):
        if key not in arrays:
            return f"no array {key!r}"
    problem = (_history_problem if meta["version"] > 1 else _history_1_problem)(meta["trainer"]["history"], arrays)
    if problem:
        return problem
    progress = meta["trainer"].get("progress")
    if progress is not None:
        if not isinstance(progress, dict) or not all(_is(progress.get(k), t) for k, t in _PROGRESS.items()):
            return "trainer.progress is incomplete"
        index, losses = arrays.get("state/progress_index"), arrays.get("state/progress_batch_losses")
        if index is None or index.ndim != 1 or losses is None or losses.ndim != 1:
            return "no saved row order for the part-way epoch"
        if not 0 <= progress["batch"] <= min(len(losses), len(index)):
            return "trainer.progress.batch is out of range"
        # The order indexes the rows in compiled code, which does not check bounds: a permutation only.
        if index.dtype.kind not in "iu" or not np.array_equal(np.sort(index), np.arange(len(index))):
            return "the part-way epoch's row order is not a permutation"
    mean, std = arrays.get("info/norm_mean"), arrays.get("info/norm_std")
    if (mean is None) != (std is None):
        return "only one of norm_mean and norm_std"
    if mean is not None:
        shape = (meta["model"]["input_dim"],)
        if mean.shape != shape or std.shape != shape or not np.all(np.isfinite(mean)) or not np.all((std > 0) & np.isfinite(std)):
            return "input normalisation does not fit the model"
    mean, std = arrays.get("info/target_mean"), arrays.get("info/target_std")
    if (mean is None) != (std is None):
        return "only one of target_mean and target_std"
    if mean is not None and (mean.ndim != 1 or std.shape != mean.shape or not np.all(np.isfinite(mean))
                             or not np.all((std > 0) & np.isfinite(std))):  # fmt: skip
        return "the target's standardisation is not finite numbers, one a column"
    columns = meta["info"].get("columns")
    if columns is not None:
        problem = _columns_problem(columns)
        if problem:
            return problem
        if sum(1 if c["kind"] == "number" else len(c["categories"]) for c in columns) != meta["model"]["input_dim"]:
            return "info.columns encode a width other than the model's input_dim"
    return None


def _history_problem(history, arrays):
    """What is wrong with a version 2 history (``History.state``), or None."""
    metrics, block, folded = history["metrics"], history["iteration_block"], history["iterations_folded"]
    if not all(isinstance(k, str) for k in metrics) or len(set(metrics)) != len(metrics):
        return "trainer.history.metrics must be distinct names"
    first = history.get("first_loss")
    if first is not None and not _is(first, NUMBER):
        return f"trainer.history.first_loss is {type(first).__name__}"
    if not (1 <= block <= 2**62 and 0 <= folded <= 2**62):
        return "trainer.history's iteration counts are out of range"
    epoch, table = arrays.get("state/epoch"), arrays.get("state/history")
    summary, losses = arrays.get("state/iteration_summary"), arrays["state/iteration_loss"]
    if epoch is None or table is None or summary is None:
        return "no history arrays"
    if epoch.ndim != 1 or epoch.dtype.kind not in "iu" or table.shape != (len(metrics), len(epoch)):
        return "the history arrays do not line up with its epochs and metrics"
    if losses.ndim != 1 or summary.shape != (3, -(-folded // block)):
        return "the iteration losses do not line up with their summary"
    return None


def _history_1_problem(history, arrays):
    """What is wrong with a version 1 history (JSON lists), or None."""
    if not all(_is(e, int) and 0 <= e < 2**62 for e in history["epoch"]):
        return "trainer.history.epoch must hold whole numbers"
    if not all(isinstance(v, list) and all(_is(x, NUMBER) for x in v) for v in history["history"].values()):
        return "trainer.history.history must hold lists of numbers"
    return None


def _columns_problem(columns):
    """What is wrong with ``info.columns`` (``data.prepare.Columns``), or None."""
    for c in columns:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or c.get("kind") not in ("number", "category"):
            return "info.columns must be tables with a name and a kind, number or category"
        if c["kind"] == "number" and c.get("fill") is not None and not (_is(c["fill"], NUMBER) and math.isfinite(c["fill"])):
            return f"info.columns: the fill of {c['name'][:40]!r} is not a finite number"
        if c["kind"] == "category":
            categories = c.get("categories")
            if not (isinstance(categories, list) and categories and all(isinstance(v, str) for v in categories)
                    and len(set(categories)) == len(categories)):  # fmt: skip
                return f"info.columns: {c['name'][:40]!r} needs distinct text categories"
    if len({c["name"] for c in columns}) != len(columns):
        return "info.columns names a column twice"
    return None
