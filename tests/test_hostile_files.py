"""Hostile files: every reader either succeeds with sane output or raises one jitprop error line.

Hypothesis starts from valid files (a CSV with a header and a target column, an .npz data file,
a run TOML from ``jitprop train --print-config``, a checkpoint saved after a tiny fit) and mutates
them: truncation, flipped, inserted and deleted bytes, NaN / inf / huge numbers and text where
numbers belong, non-UTF-8 bytes, byte-order marks, duplicate and missing columns and keys.
Crafted cases reach what random bytes rarely do: pickled and object arrays, .npy headers that
declare exabytes, wrong dtypes and ranks, checkpoints altered with and without a matching
checksum, a future format version. Nothing else may escape: no other exception, no warning,
no hang, no unpickling, no allocation that a header merely asks for, and on the command line
exactly one ``Error:`` line.
"""

import copy
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.extra import numpy as hnp

import jitprop
from jitprop import checkpoint
from jitprop.data import arrays as jdata
from jitprop.data import prepare as jprep
from jitprop.data import runconfig
from jitprop.data import tables as datasets
from jitprop.cli import cli
from jitprop.cli.run import plan

JITPROP = str(Path(sys.executable).with_name("jitprop"))

# Deterministic for CI (derandomize, no example database), sized so the file runs in ~20 s on 2 cores.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(FUZZ, max_examples=100)

pytestmark = pytest.mark.filterwarnings("error")  # a stray warning is an extra line on stderr


# -- the property ------------------------------------------------------------


@contextmanager
def no_hang(seconds=10):
    """Fail, rather than wait forever, when a reader takes far too long."""

    def alarm(signum, frame):
        raise TimeoutError(f"reader still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(read, *args, **kwargs):
    """``read``'s result, or the JitpropError it raised, whose message must be one line.
    Any other exception propagates and fails the test."""
    try:
        with no_hang():
            result = read(*args, **kwargs)
    except jitprop.JitpropError as exc:
        message = str(exc)
        assert message.strip() and not any(c in message for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), message
        result = exc
    if currently_in_test_context():  # what the examples came to: pytest --hypothesis-show-statistics
        what = "ok" if not isinstance(result, Exception) else re.sub(r"'[^']*'|\d+|\(.*", "_", str(result).split(": ", 1)[-1])
        event(f"{read.__name__}: {what[:60]}")
    return result


def sane_table(table, features=None):
    X, y = table.X, table.y
    assert X.dtype == np.float64 and X.ndim == 2 and X.shape[0] >= 1 and X.shape[1] >= 1
    if table.text is None:
        assert np.isfinite(X).all()
    else:  # a CSV: NaN where a cell is missing and throughout a text column, never inf
        assert not np.isinf(X).any() and len(table.lines) == len(X)
        for k, cells in table.text.items():
            assert 0 <= k < X.shape[1] and cells.dtype.kind == "U" and len(cells) == len(X) and np.isnan(X[:, k]).all()
    assert len(table.feature_names) == X.shape[1]
    if features is not None:
        assert table.feature_names == list(features)
    if y is not None:
        assert y.ndim in (1, 2) and len(y) == len(X) and y.dtype.kind in "iufbU"
        if y.dtype.kind != "U":
            assert np.isfinite(y).all()


def sane_config(config):
    assert isinstance(config, dict) and set(config) <= set(runconfig.SCHEMA)
    assert runconfig._out_of_range(config) is None
    assert runconfig.check(config) == config  # checking again changes nothing


# -- valid files to start from --------------------------------------------------


def _csv_text(target_text):
    rng = np.random.default_rng(0)
    lines = ["sepal,petal,width,species" if target_text else "a,b,c,value"]
    for i in range(12):
        a, b, c = rng.normal(size=3).round(3)
        lines.append(f"{a},{b},{c},{['setosa', 'virginica', 'versicolor'][i % 3] if target_text else round(a * 2 - b, 3)}")
    return "\n".join(lines) + "\n"


def _npz_bytes(save, **arrays):
    buffer = io.BytesIO()
    save(buffer, **arrays)
    return buffer.getvalue()


def _npy_bytes(array, **kwargs):
    buffer = io.BytesIO()
    np.save(buffer, array, **kwargs)
    return buffer.getvalue()


def _members(blob):
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def _zip(members, compress=zipfile.ZIP_STORED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compress) as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": on purpose
        for name, blob in members:
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), blob, compress)
    return buffer.getvalue()


class Base:
    """The valid files, made once for the module."""


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    where = tmp_path_factory.mktemp("base")
    b = Base()
    b.dir = where
    b.csv = [_csv_text(True).encode(), _csv_text(False).encode()]
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 3))
    b.npz = [
        _npz_bytes(np.savez, X=X, y=(X[:, 0] > 0).astype(np.int64)),
        _npz_bytes(np.savez_compressed, X=X.astype(np.float32), y=np.array(["cat", "dog"] * 10)),
    ]
    result = CliRunner().invoke(
        cli, ["train", "--dataset", "spirals", "--schedule", "cosine:T_max=5", "--callback", "early_stopping:patience=2",
              "--optimizer", "sgd:momentum=0.9", "--print-config"],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    b.toml = result.output.encode()

    # A checkpoint as the command line saves it (run configuration, labels, features, normalisation),
    # and one stopped part-way through an epoch (row order and running sums in it).
    (where / "data.csv").write_bytes(b.csv[0])
    p = plan(runconfig.check({"dataset": str(where / "data.csv"), "epochs": 1, "hidden": [4], "batch_size": 4}))
    trainer = p.trainer()
    trainer.fit(*p.train, epochs=1, validation_data=p.validation)
    checkpoint.save(where / "model.npz", trainer, state=trainer.end_state)

    class StopAfterTwoBatches:
        @jitprop.hookimpl
        def on_train_batch_end(self, trainer, batch):
            if batch == 1:
                trainer.request_interrupt()

    trainer = p.trainer(extra_callbacks=[StopAfterTwoBatches()])
    trainer.fit(*p.train, epochs=2, validation_data=p.validation)
    assert trainer.interrupted
    checkpoint.save(where / "partway.npz", trainer, state=trainer.end_state)
    assert checkpoint.load(where / "partway.npz").meta["trainer"]["progress"]
    b.checkpoints = [(where / "model.npz").read_bytes(), (where / "partway.npz").read_bytes()]
    b.model = checkpoint.load(where / "model.npz")
    return b


def write(tmp_path, name, blob):
    path = tmp_path / name
    path.write_bytes(blob)
    return path


# -- mutations --------------------------------------------------------------------

POS = st.integers(0, 1 << 20)  # a position, taken modulo the length of what it lands in
GARBAGE = st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3(", b"\x80", b"\x00", b"\xef\xbb\xbf", b"\xe9", b"\xed\xa0\x80"])


@st.composite
def byte_edits(draw, blob, max_edits=3, near=None):
    """``blob`` truncated, with bits flipped and bytes set, inserted, deleted or repeated.
    With ``near``, positions fall in the first ``near`` bytes half of the time (a header)."""
    b = bytearray(blob)
    for _ in range(draw(st.integers(1, max_edits))):
        op = draw(st.sampled_from(["truncate", "flip", "set", "insert", "delete", "repeat", "garbage"]))
        at = draw(POS)
        if near and draw(st.booleans()):
            at %= near
        i = at % (len(b) + 1)
        if op == "truncate":
            del b[i:]
        elif op == "flip" and i < len(b):
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and i < len(b):
            b[i] = draw(st.integers(0, 255))
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del b[i : i + draw(st.integers(1, 64))]
        elif op == "repeat":
            b[i:i] = b[i : i + draw(st.integers(1, 64))]
        elif op == "garbage":
            b[i:i] = draw(GARBAGE)
    return bytes(b)


CELLS = st.sampled_from(
    ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e308", "1e308", "1e-400", "9" * 400, "", " ", "x", "setosa",
     "1_0", "0x10", "\uff11", "\u00b2", "--5", "\x00", '"', '""', "'", ",", "\n", "\r", "\r\n", "\ufeff", "\u00e9",
     "\U0001f642", "\\", "-0", "+5", "1,5", "a" * 300]  # fmt: skip
)


@st.composite
def csv_files(draw, base):
    """A valid CSV edited cell by cell, column by column, then perhaps byte by byte."""
    rows = [line.split(",") for line in draw(st.sampled_from(base.csv)).decode().splitlines()]
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["cell", "header", "duplicate", "drop_column", "drop_cell", "add_cell", "drop_rows", "blank"]))
        r, c = draw(POS) % len(rows), draw(POS) % len(rows[0])
        if op == "cell" and c < len(rows[r]):
            rows[r][c] = draw(CELLS)
        elif op == "header":
            rows[0][c] = draw(CELLS)
        elif op == "duplicate":
            rows[0][c] = rows[0][(c + 1) % len(rows[0])]
        elif op == "drop_column":
            rows = [row[:c] + row[c + 1 :] for row in rows]
        elif op == "drop_cell" and rows[r]:
            del rows[r][c % len(rows[r])]
        elif op == "add_cell":
            rows[r].append(draw(CELLS))
        elif op == "drop_rows":
            rows = rows[: 1 + r % 2]
        elif op == "blank":
            rows.insert(r, [""])
        if not rows or not rows[0]:
            rows = [["a"]]
    blob = ("\n".join(",".join(row) for row in rows) + draw(st.sampled_from(["\n", "", "\r\n"]))).encode()
    blob = draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + blob
    if draw(st.booleans()):
        blob = draw(byte_edits(blob))
    return blob


ODD_DTYPES = st.sampled_from(
    ["<f8", "<f4", "<f2", ">f8", "<i8", "|i1", "<u8", "|b1", "<c16", "<U3", "|S2", "<M8[s]", "<m8[s]",
     [("a", "<f8"), ("b", "<i4")]]  # fmt: skip
)
ODD_ARRAYS = hnp.arrays(ODD_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))


class Canary:
    """Unpickling this makes a directory: proof that something unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def pickled_npy(marker):
    return _npy_bytes(np.array([[Canary(marker), 1.0]], dtype=object), allow_pickle=True)


def raw_npy(header, payload=b"", version=(1, 0)):
    """An .npy member with ``header`` as its header text, however wrong."""
    text = header.encode("latin-1", "replace")
    length = "<H" if version == (1, 0) else "<I"
    prefix = 6 + 2 + struct.calcsize(length)
    text += b" " * ((-(prefix + len(text) + 1)) % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack(length, len(text)) + text + payload


GIGANTIC = [(10**12, 10**6), (2**62,), (2**63,), (10**30, 3), (2**31, 2**31, 2**31), (0, 10**20), (-1, 3), (3, -7)]


@st.composite
def npy_headers(draw):
    """A .npy member whose header says anything: gigantic, negative or odd shapes, any descr, any version."""
    shape = draw(st.one_of(st.sampled_from(GIGANTIC), st.lists(st.integers(0, 6), max_size=3).map(tuple)))
    descr = draw(st.sampled_from(["<f8", "<f4", "|b1", "<i8", "|O", "<c16", "<U5", "|S3", "|V8", "<M8[s]", "[('a', '<f8')]",
                                  "'<f8'", "('<f8', (3,))", "'<U1000000000000'", "{}", "[]", "1"]))  # fmt: skip
    fortran = draw(st.sampled_from(["False", "True", "0", "'no'"]))
    header = draw(st.one_of(
        st.just(f"{{'descr': {descr if descr[0] in '[({1' else repr(descr)}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"),
        st.text(max_size=80),
        st.sampled_from(["{", "{'descr': '<f8'}", "[1, 2]", "{[1]: 2}", "(" * 300 + ")" * 300, "{'shape': (1,)*1000}"]),
    ))  # fmt: skip
    n = draw(st.sampled_from([0, 1, 7, 8, 24, 48, 200]))
    version = draw(st.sampled_from([(1, 0), (2, 0), (3, 0), (9, 9)]))
    return raw_npy(header, bytes(n), version)


@st.composite
def npz_files(draw, base, marker):
    """A valid .npz edited: bytes of the file or of one member (re-zipped with a good CRC), hostile
    arrays or headers in place of X or y, members dropped, renamed or doubled."""
    blob = draw(st.sampled_from(base.npz))
    how = draw(st.sampled_from(["bytes", "member", "values", "array", "header", "names", "pickle"]))
    if how == "bytes":
        return draw(byte_edits(blob))
    members = _members(blob)
    i = draw(POS) % len(members)
    name, payload = members[i]
    if how == "values":  # the same array with NaN, inf, huge or tiny numbers in places
        a = np.load(io.BytesIO(payload))
        if a.dtype.kind == "f":
            a = a.astype(np.float64)  # room for 1e300
            for _ in range(draw(st.integers(1, 3))):
                a.flat[draw(POS) % a.size] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -3.4e38, 5e-324]))
        members[i] = (name, _npy_bytes(a))
    elif how == "member":
        members[i] = (name, draw(byte_edits(payload, near=128)))
    elif how == "array":
        members[i] = (name, _npy_bytes(draw(ODD_ARRAYS)))
    elif how == "header":
        members[i] = (name, draw(npy_headers()))
    elif how == "pickle":
        members[i] = (name, pickled_npy(marker))
    else:
        op = draw(st.sampled_from(["drop", "rename", "double", "extra", "dir"]))
        if op == "drop":
            del members[i]
        elif op == "rename":
            members[i] = (draw(st.sampled_from(["X", "x.npy", "Y.npy", "X.npy.npy", "", "../X.npy", "X.NPY"])), payload)
        elif op == "double":
            members.append(members[i])
        elif op == "extra":
            members.append((draw(st.sampled_from(["notes.txt", "meta"])), b"hello"))
        else:
            members.append(("data/", b""))
    return _zip(members, draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])))


TOML_VALUES = st.sampled_from(
    ["nan", "inf", "-inf", "1e999", "-1", "0", "9" * 30, "9" * 5000, "'text'", '"\\ud800"', "[1, [2]]", "{}", "[]",
     "true", "1979-05-27", "07:32:00", "{name = 'dense', units = 1e999}", "[" * 2000 + "]" * 2000, "{a=" * 800 + "1" + "}" * 800,
     "0x7fffffffffffffff", "-9223372036854775809", '"""', "'", ""]  # fmt: skip
)


@st.composite
def toml_files(draw, base):
    """The --print-config TOML with lines dropped, doubled (duplicate keys), keys misspelt and values replaced."""
    lines = base.toml.decode().splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(POS) % len(lines)
        op = draw(st.sampled_from(["drop", "double", "value", "key", "table"]))
        key, eq, value = lines[i].partition("=")
        if op == "drop":
            del lines[i]
        elif op == "double":
            lines.insert(i, lines[i])
        elif op == "value" and eq:
            lines[i] = f"{key}= {draw(TOML_VALUES)}"
        elif op == "key" and eq:
            lines[i] = draw(st.sampled_from(["epoch", "name", "units", '""', "hidden", "layers", "a.b"])) + " =" + value
        elif op == "table":
            lines.insert(i, draw(st.sampled_from(["[loss]", "[[layers]]", "[[callbacks]]", "[epochs]", "[optimizer.lr]"])))
        if not lines:
            lines = [""]
    blob = ("\n".join(lines) + "\n").encode()
    blob = draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + blob
    if draw(st.booleans()):
        blob = draw(byte_edits(blob))
    return blob


# -- the readers ------------------------------------------------------------------

MODELS = {}


def model_for(input_dim):
    if input_dim not in MODELS:
        MODELS[input_dim] = jitprop.Sequential([jitprop.layer("dense", units=2)], input_dim=input_dim)
    return MODELS[input_dim]


def read_csv_every_way(path):
    for kwargs in ({}, {"target": "species"}, {"need_target": False}, {"need_target": False, "features": ["petal", "sepal"]}):
        table = outcome(datasets.load_table, str(path), **kwargs)
        if not isinstance(table, jitprop.JitpropError):
            sane_table(table, kwargs.get("features"))
            encode_every_way(table)


def encode_every_way(table):
    """The columns as training fits them (refusing missing cells, or filling them) and their encoding."""
    rows = np.arange(len(table.X))
    for fill in (None, "median"):
        columns = outcome(jprep.Columns.fit, table, rows, fill)
        if isinstance(columns, jitprop.JitpropError):
            continue
        encoded = outcome(columns.encode, table)
        if not isinstance(encoded, jitprop.JitpropError):
            X, _ = encoded
            assert np.isfinite(X).all() and X.shape == (len(table.X), len(columns.feature_names))


def read_npz_every_way(path, marker):
    for need_target in (True, False):
        table = outcome(datasets.load_table, str(path), need_target=need_target)
        if not isinstance(table, jitprop.JitpropError):
            sane_table(table)
    arrays = outcome(jdata.load_npz, path, "not a readable .npz file")
    if not isinstance(arrays, jitprop.JitpropError):
        for a in arrays.values():  # the array checks of fit / evaluate, on whatever came out
            assert a.dtype.kind != "O"
            model = model_for(a.shape[-1] if a.ndim and a.shape[-1] else 3)
            outcome(jprep.as_inputs, model, a)
            for loss in ("cross_entropy", "mse", "binary_cross_entropy"):
                outcome(jprep.as_targets, model, jitprop.loss(loss), a, len(a) if a.ndim else 1)
    assert not os.path.exists(marker), "something unpickled"


def use_checkpoint(path):
    """Load a checkpoint and use it as evaluate, predict and --resume do."""
    ck = checkpoint.load(path)
    assert isinstance(ck.info, dict) and isinstance(ck.history["history"], dict)
    assert all(a.dtype.kind in "biuf" for a in ck.arrays.values())
    model = ck.build_model()
    meta, arrays = ck.trainer_state(model)
    trainer = jitprop.Trainer(model, loss=jitprop.loss(**ck.meta["loss"]), optimizer=jitprop.optimizer(**meta["optimizer"]))
    trainer.load_state(meta, arrays)
    if ck.info.get("config"):
        runconfig.check(ck.info["config"], str(path))
    return ck


# -- properties -------------------------------------------------------------------


@FUZZ
@given(st.data())
def test_mutated_csv_files(base, tmp_path, data):
    read_csv_every_way(write(tmp_path, "data.csv", data.draw(csv_files(base))))


@FUZZ
@given(st.data())
def test_mutated_npz_files(base, tmp_path, data):
    marker = str(tmp_path / "unpickled")
    read_npz_every_way(write(tmp_path, "data.npz", data.draw(npz_files(base, marker))), marker)


@FUZZ
@given(st.data())
def test_mutated_toml_files(base, tmp_path, data):
    config = outcome(runconfig.load, write(tmp_path, "run.toml", data.draw(toml_files(base))))
    if not isinstance(config, jitprop.JitpropError):
        sane_config(config)


@FUZZ
@given(st.data())
def test_mutated_option_specs(data):
    """``--optimizer NAME:k=v`` and friends: values are read as TOML literals, or kept as text."""
    text = data.draw(st.sampled_from(["adam", "sgd:momentum=0.9", "csv_logger:path=\"a,b.csv\""]))
    text += data.draw(st.sampled_from(["", ":", ","])) + ",".join(
        f"{data.draw(st.sampled_from(['lr', 'x', '', ' ', '=']))}={data.draw(TOML_VALUES)}" for _ in range(data.draw(st.integers(0, 3)))
    )
    spec = outcome(runconfig.parse_spec, text)
    if not isinstance(spec, jitprop.JitpropError):
        outcome(runconfig.check, {"optimizer": spec})


@FEW
@given(st.data())
def test_mutated_checkpoint_bytes(base, tmp_path, data):
    """Damaged bytes, of the file or of one member re-zipped with a good CRC: an error, or (rarely,
    where the bytes were not part of what is read) the checkpoint as it was."""
    original = data.draw(st.sampled_from(base.checkpoints))
    if data.draw(st.booleans()):
        blob = data.draw(byte_edits(original))
    else:
        members = _members(original)
        i = data.draw(POS) % len(members)
        members[i] = (members[i][0], data.draw(byte_edits(members[i][1], near=128)))
        blob = _zip(members, zipfile.ZIP_DEFLATED)
    result = outcome(use_checkpoint, write(tmp_path, "model.npz", blob))
    if not isinstance(result, jitprop.JitpropError):
        assert result.meta == checkpoint.load(write(tmp_path, "good.npz", original)).meta


# Copied on every draw: an edit must not change the list or table that the next example draws.
JSON_VALUES = st.sampled_from([None, -1, 0, 10**30, 1.5, float("nan"), float("inf"), True, "x", "", [], {}, [1, "a"], {"name": 3},
                               {"name": "dense"}, [[[]]]]).map(copy.deepcopy)  # fmt: skip


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def resign(path, meta, arrays):
    """Write a checkpoint whose checksum matches its (hostile) content, as anyone could."""
    text = json.dumps(meta, allow_nan=True) if not isinstance(meta, str) else meta
    np.savez(path, meta=np.array(text), checksum=np.array(checkpoint._checksum(text, arrays)), **arrays)
    return path


@FUZZ
@given(st.data())
def test_checkpoints_altered_and_resigned(base, tmp_path, data):
    """The checksum finds damage, not intent: a checkpoint edited and given a matching checksum
    must still load sanely or fail in one line."""
    original = checkpoint.load(write(tmp_path, "good.npz", data.draw(st.sampled_from(base.checkpoints))))
    meta, arrays = json.loads(json.dumps(original.meta)), dict(original.arrays)
    for _ in range(data.draw(st.integers(1, 3))):
        if data.draw(st.booleans()):
            where = data.draw(st.sampled_from(list(_paths(meta))[1:]))
            parent = meta
            for key in where[:-1]:
                parent = parent[key]
            if data.draw(st.booleans()) and isinstance(parent, dict):
                del parent[where[-1]]
            else:
                parent[where[-1]] = data.draw(JSON_VALUES)
        else:
            key = data.draw(st.sampled_from(sorted(arrays)))
            op = data.draw(st.sampled_from(["drop", "odd", "nan", "reshape", "transpose", "shift"]))
            if op == "drop":
                del arrays[key]
            elif op == "odd":
                arrays[key] = data.draw(ODD_ARRAYS)
            elif op == "nan" and arrays[key].dtype.kind == "f":
                arrays[key] = np.full_like(arrays[key], np.nan)
            elif op == "nan" and arrays[key].dtype.kind in "iu":
                arrays[key] = arrays[key].astype(np.int64) + 10**6
            elif op == "reshape":
                arrays[key] = arrays[key].reshape(-1)[:-1]
            elif op == "transpose":
                arrays[key] = np.asfortranarray(arrays[key].reshape(-1, 1)[::-1])
            elif op == "shift" and arrays[key].dtype.kind in "iuf":
                arrays[key] = arrays[key] + 1
    outcome(use_checkpoint, resign(tmp_path / "hostile.npz", meta, arrays))


# -- crafted cases ----------------------------------------------------------------


def message_of(read, *args):
    result = outcome(read, *args)
    assert isinstance(result, jitprop.JitpropError), f"{read.__name__} accepted it"
    return str(result)


def test_a_pickled_payload_is_never_unpickled(tmp_path):
    marker = str(tmp_path / "unpickled")
    for name, other in [("X.npy", ("y.npy", _npy_bytes(np.arange(1)))), ("meta.npy", ("checksum.npy", _npy_bytes(np.array("0"))))]:
        path = write(tmp_path, "p.npz", _zip([(name, pickled_npy(marker)), other]))
        assert "jitprop never unpickles" in message_of(datasets.load_table, str(path))
        assert "jitprop never unpickles" in message_of(checkpoint.load, path)
    # a file that is one pickle, not a zip archive
    import pickle

    path = write(tmp_path, "p.npz", pickle.dumps(Canary(marker)))
    assert "not a zip archive" in message_of(datasets.load_table, str(path))
    assert "not a zip archive" in message_of(checkpoint.load, path)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("shape", GIGANTIC[:5], ids=str)
@pytest.mark.parametrize("compress", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_a_gigantic_declared_shape_is_refused_before_allocating(tmp_path, shape, compress):
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape!r}, }}"
    path = write(tmp_path, "huge.npz", _zip([("X.npy", raw_npy(header, bytes(4096))), ("y.npy", _npy_bytes(np.arange(3)))], compress))
    tracemalloc.start()
    try:
        message = message_of(datasets.load_table, str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "declares" in message and peak < 10 * 2**20


def test_a_declared_size_beyond_the_memory_available_is_refused(tmp_path, monkeypatch):
    """An honest header whose array would not fit: refused by size, before allocating it."""
    path = write(tmp_path, "big.npz", _npz_bytes(np.savez_compressed, X=np.zeros((1000, 200)), y=np.zeros(1000)))
    monkeypatch.setattr(jdata, "available_memory", lambda: 10**6)
    tracemalloc.start()
    try:
        message = message_of(datasets.load_table, str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "array 'X' of shape (1000, 200) needs 1.5 MiB, more than the 976.6 KiB of memory available" in message
    assert peak < 2**20
    csv = write(tmp_path, "big.csv", b"a,b\n" + b"1,2\n" * 200_000)
    assert "reading this CSV file needs" in message_of(datasets.load_table, str(csv))


@pytest.mark.parametrize(
    "X, y, message",
    [
        (np.zeros((2, 2), complex), np.zeros(2), "X must be a numeric array of rows (2-D, or one shaped sample per row), got complex128"),
        (np.array([["a", "b"]]), np.zeros(1), "X must be a numeric array of rows (2-D, or one shaped sample per row), got <U1"),
        (np.zeros(2, [("a", "f8"), ("b", "i4")]), np.zeros(2), "X must be a numeric array of rows"),
        (np.zeros((2, 2), "M8[s]"), np.zeros(2), "got datetime64[s]"),
        (np.float64(3), np.zeros(1), "of shape ()"),
        (np.zeros(3), np.zeros(3), "of shape (3,)"),
        (np.zeros((2, 2, 0)), np.zeros(2), "X has no columns (shape (2, 2, 0))"),
        (np.zeros((0, 3)), np.zeros(0), "X has no rows"),
        (np.zeros((3, 0)), np.zeros(3), "X has no columns"),
        (np.array([[1.0, np.nan], [0, 0]]), np.zeros(2), "X holds NaN or infinite values (first in row 0)"),
        (np.array([[1.0, 0], [np.inf, 0]]), np.zeros(2), "(first in row 1)"),
        (np.zeros((2, 2)), np.array([0, np.nan]), "y holds NaN or infinite values (first in row 1)"),
        (np.zeros((2, 2)), np.zeros((2, 2, 1)), "y must have one row per row of X"),
        (np.zeros((2, 2)), np.zeros((2, 0)), "y must have one row per row of X"),
        (np.zeros((2, 2)), np.zeros(2, complex), "y must hold numbers or text labels, got complex128"),
        (np.zeros((2, 2)), np.array([b"a", b"b"]), "got |S1"),
    ],
)
def test_wrong_dtypes_and_ranks(tmp_path, X, y, message):
    path = write(tmp_path, "d.npz", _npz_bytes(np.savez, X=X, y=y))
    assert message in message_of(datasets.load_table, str(path))


@pytest.mark.parametrize(
    "members, message",
    [
        ([("X", b"raw bytes"), ("y.npy", _npy_bytes(np.zeros(1)))], "entry 'X' is not an .npy array"),
        ([("X.npy", _npy_bytes(np.zeros((1, 1))))] * 2, "two arrays named 'X'"),
        ([("y.npy", _npy_bytes(np.zeros(1)))], "needs an array named 'X' (found: y)"),
        ([("X.npy", _npy_bytes(np.zeros((2, 2)))[:-3])], "declares (2, 2) of float64, 32 bytes, but holds 29"),
        ([("X.npy", raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), }", bytes(8), (9, 9)))], "format version 9.9"),
        ([("X.npy", raw_npy("{[1]: 2}", bytes(8)))], "not a readable .npz file (TypeError: unhashable type: 'list')"),
        ([("X.npy", raw_npy("{'descr': '<f8'}", bytes(8)))], "(ValueError: Header does not contain the correct keys: ['descr'])"),
        ([("X.npy", raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1", bytes(8)))], "(TokenError: "),
        ([("X.npy", raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (-1, 3), }"))], "declares the shape (-1, 3)"),
    ],
)
def test_hostile_npz_members(tmp_path, members, message):
    assert message in message_of(datasets.load_table, str(write(tmp_path, "m.npz", _zip(members))))


def test_fortran_order_and_big_endian_arrays_read_correctly(tmp_path):
    X = np.asfortranarray(np.arange(12.0).reshape(4, 3)).astype(">f8")
    path = write(tmp_path, "f.npz", _npz_bytes(np.savez, X=X, y=np.arange(4)))
    table = datasets.load_table(str(path))
    assert np.array_equal(table.X, np.arange(12.0).reshape(4, 3))


def test_an_altered_checkpoint_is_reported_as_corrupt(base, tmp_path):
    good = base.model
    meta_text = json.dumps(good.meta)
    checksum = checkpoint._checksum(meta_text, good.arrays)
    altered_meta = json.dumps({**good.meta, "batch_size": good.meta["batch_size"] + 1})
    weights = dict(good.arrays)
    weights["param/0.bias"] = weights["param/0.bias"] + 1e-3
    cases = {
        "meta": (altered_meta, good.arrays),
        "array": (meta_text, weights),
        "dropped": (meta_text, {k: v for k, v in good.arrays.items() if k != "param/0.bias"}),
        "added": (meta_text, {**good.arrays, "state/extra": np.zeros(3)}),
    }
    for name, (text, arrays) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, meta=np.array(text), checksum=np.array(checksum), **arrays)
        assert message_of(checkpoint.load, path) == f"{path}: checkpoint is corrupt (checksum mismatch)", name


def test_a_future_checkpoint_version_is_refused(base, tmp_path):
    meta = {**base.model.meta, "version": checkpoint.VERSION + 1}
    path = resign(tmp_path / "future.npz", meta, base.model.arrays)
    assert f"checkpoint format version {checkpoint.VERSION + 1} is not supported" in message_of(checkpoint.load, path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m, a: m.pop("model"), "model is NoneType"),
        (lambda m, a: m["trainer"].update(epoch="3"), "trainer.epoch is str"),
        (lambda m, a: m["info"].update(labels=[1, 2]), "info.labels must be text"),
        (lambda m, a: a.update({"param/0.bias": np.array(["a"] * 4)}), "array 'param/0.bias' holds <U1, not numbers"),
        (lambda m, a: a.pop("state/opt_state"), "no array 'state/opt_state'"),
        (lambda m, a: a.update({"info/norm_std": np.zeros(3)}), "input normalisation does not fit the model"),
        (lambda m, a: a.update({"info/norm_mean": np.zeros(7)}), "input normalisation does not fit the model"),
        (lambda m, a: a.pop("info/norm_mean"), "only one of norm_mean and norm_std"),
        (lambda m, a: m["model"].update(input_dim=True), "model.input_dim is bool"),
        (lambda m, a: m["info"].update(labels=["a"]), "names 1 class labels for a model with 3 outputs"),
        (lambda m, a: m["model"]["layers"][0].update(units=10**30), "parameters needs"),  # refused before allocating
        (lambda m, a: m.update(meta_nesting=[[[[[]]]]]), None),  # extra keys are fine
        (lambda m, a: m["info"]["columns"][0].update(kind="text"), "info.columns must be tables with a name and a kind"),
        (lambda m, a: m["info"]["columns"].pop(), "info.columns encode a width other than the model's input_dim"),
        (lambda m, a: m["info"]["columns"][0].update(kind="category", categories=["a", "a"]),
         "info.columns: 'sepal' needs distinct text categories"),
        (lambda m, a: m["info"]["columns"][1].update(fill="x"), "info.columns: the fill of 'petal' is not a finite number"),
        (lambda m, a: m["info"].update(fill=3), "info.fill is int"),
        (lambda m, a: a.update({"info/target_mean": np.zeros(3)}), "only one of target_mean and target_std"),
        (lambda m, a: a.update({"info/target_mean": np.zeros(3), "info/target_std": np.zeros(3)}),
         "the target's standardisation is not finite numbers"),
        (lambda m, a: a.update({"info/target_mean": np.zeros(2), "info/target_std": np.ones(2)}),
         "standardises 2 target values for a model with 3 outputs"),
    ],
)
def test_a_resigned_checkpoint_with_a_hostile_structure(base, tmp_path, edit, message):
    meta, arrays = json.loads(json.dumps(base.model.meta)), dict(base.model.arrays)
    edit(meta, arrays)
    path = resign(tmp_path / "r.npz", meta, arrays)
    if message is None:
        use_checkpoint(path)
    elif message == "parameters needs":
        assert re.search(r"a model of [\d,]+ parameters needs .* more than the .* of memory available",
                         message_of(use_checkpoint, path))  # fmt: skip
    elif message.startswith(("its model", "names", "standardises")):  # found when building the model
        assert f"{path}: {message}" in message_of(use_checkpoint, path)
    else:
        assert f"{path}: not a checkpoint jitprop can use ({message}" in message_of(checkpoint.load, path)


def test_a_resigned_part_way_row_order_must_be_a_permutation(base, tmp_path):
    good = checkpoint.load(write(tmp_path, "p.npz", base.checkpoints[1]))
    arrays = dict(good.arrays)
    arrays["state/progress_index"] = arrays["state/progress_index"] + 10**6  # out of bounds in compiled code
    path = resign(tmp_path / "r.npz", good.meta, arrays)
    assert "row order is not a permutation" in message_of(checkpoint.load, path)
    meta = json.loads(json.dumps(good.meta))
    meta["trainer"]["progress"]["batch"] = -3
    path = resign(tmp_path / "r.npz", meta, good.arrays)
    assert "trainer.progress.batch is out of range" in message_of(checkpoint.load, path)


def test_resigned_meta_nested_too_deeply_or_not_json(base, tmp_path):
    for text in ["[" * 100_000 + "]" * 100_000, "{not json", '"just a string"']:
        path = resign(tmp_path / "r.npz", text, base.model.arrays)
        assert message_of(checkpoint.load, path).endswith(("checkpoint metadata is corrupt", "not a jitprop checkpoint"))


def test_labels_that_look_numeric_but_are_not(tmp_path):
    """``str.isdigit`` accepts "²" and "--5" has digits after its dashes; neither is an int."""
    path = write(tmp_path, "l.csv", "a,label\n1,\u00b2\n2,\u00b3\n3,\u00b2\n".encode())
    table = datasets.load_table(str(path))
    data = jitprop.prepare(table.X, table.y, "cross_entropy")
    assert data.labels == ["\u00b2", "\u00b3"] and data.outputs == 2 and list(data.y) == [0, 1, 0]


@pytest.mark.parametrize(
    "text, message",
    [
        (b"a,b\n" + b"1," + b"2" * 200_000 + b"\n", "line 2 is not valid CSV (field larger than field limit"),
        (b"a,b\n1,2\n3,?\n", "target column 'b' is missing ('?') on line 3; remove the rows without a target"),
        (b"a,b,c\n1,1e999,0\n", "holds '1e999', not a finite number"),
        (b"a,b\n\n\n1,inf\n2,3\n", "target column 'b' holds 'inf' on line 4"),
        (b"a,b\n1,2\n3,\xff\n", "not UTF-8 text (byte 10)"),
        (b"\xef\xbb\xbf", "the file is empty"),
        (b"a,a,b\n1,2,3\n", "column name(s) 'a' appear more than once"),
    ],
)
def test_hostile_csv_cases(tmp_path, text, message):
    assert message in message_of(datasets.load_table, str(write(tmp_path, "c.csv", text)))


def test_a_csv_with_lone_cr_line_ends_reads_like_any_other(tmp_path):
    table = datasets.load_table(str(write(tmp_path, "c.csv", b"a,b\r1,2\r3,4\r")))
    assert table.X.tolist() == [[1.0], [3.0]] and table.y.tolist() == [2.0, 4.0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("layers = " + "[" * 5000 + "]" * 5000, "invalid TOML: arrays or tables nested too deeply"),
        ("epochs = " + "1" * 5000, "invalid TOML: Exceeds the limit (4300 digits)"),
        ("seed = 99999999999999999999999", "'seed' holds 99999999999999999999999, beyond the 64-bit integers TOML allows"),
        ("[optimizer]\nname = 'adam'\nbetas = [1, 100000000000000000000]", "'optimizer' holds 100000000000000000000"),
        ("epochs = 3\nepochs = 4", "invalid TOML: Cannot overwrite a value"),
        ("seed = -1", "'seed' must be an integer >= 0, got -1"),
        ("\ufeffepochs = 3", None),
    ],
)
def test_hostile_toml_cases(tmp_path, text, message):
    result = outcome(runconfig.load, write(tmp_path, "r.toml", text.encode()))
    if message is None:
        assert result == {"epochs": 3}
    else:
        assert message in str(result)


def test_values_beyond_float32_are_an_error_not_inf():
    model = jitprop.Sequential([jitprop.layer("dense", units=2)], input_dim=2, dtype="float32")
    X = np.array([[1.0, 2.0], [1e300, 0.0]])
    with pytest.raises(jitprop.DataError, match=r"X holds values too large for float32 \(first in row 1\)"):
        jprep.as_inputs(model, X)
    assert jprep.as_inputs(jitprop.Sequential(["relu"], input_dim=2, dtype="float64"), X)[1, 0] == 1e300
    with pytest.raises(jitprop.DataError, match="must hold numbers, got values of type complex128"):
        jprep.as_inputs(model, np.zeros((2, 2), complex))
    with pytest.raises(jitprop.DataError, match="must hold numbers, got values of type timedelta64"):
        jprep.as_targets(model, jitprop.loss("mse"), np.zeros(2, "m8[s]"), 2)


# -- the command line -----------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(base):
    """Hostile files beside a good checkpoint, for the real command."""
    d = base.dir
    (d / "nan.csv").write_bytes(b"a,b,label\n1,2,0\n3,nan,1\n")
    (d / "latin1.csv").write_bytes("sepal,petal,width\n1,caf\xe9,2\n".encode("latin-1"))
    (d / "pickled.npz").write_bytes(_zip([("X.npy", pickled_npy(str(d / "unpickled"))), ("y.npy", _npy_bytes(np.arange(1)))]))
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 1000000), }"
    (d / "huge.npz").write_bytes(_zip([("X.npy", raw_npy(header)), ("y.npy", _npy_bytes(np.arange(3)))]))
    (d / "deep.toml").write_text("layers = " + "[" * 5000 + "]" * 5000 + "\n")
    (d / "big.toml").write_text("seed = 99999999999999999999999\n")
    good = base.model
    np.savez(d / "corrupt.npz", meta=np.array(json.dumps({**good.meta, "seed": 7})),
             checksum=np.array(checkpoint._checksum(json.dumps(good.meta), good.arrays)), **good.arrays)  # fmt: skip
    meta = json.loads(json.dumps(good.meta))
    meta["info"]["labels"] = meta["info"]["labels"][:1]  # fewer names than the model has classes
    resign(d / "resigned.npz", meta, good.arrays)
    return d


CLI = [
    (["train", "--dataset", "nan.csv"], "nan.csv: column 'b' line 3 (the header is line 1) is missing"),
    (["train", "--dataset", "pickled.npz"], "pickled.npz: array 'X' holds Python objects"),
    (["train", "--dataset", "huge.npz"], "huge.npz: not a readable .npz file (array 'X' declares (1000000000000, 1000000)"),
    (["train", "--config", "deep.toml"], "deep.toml: invalid TOML: arrays or tables nested too deeply"),
    (["train", "--config", "big.toml"], "beyond the 64-bit integers TOML allows"),
    (["evaluate", "corrupt.npz"], "corrupt.npz: checkpoint is corrupt (checksum mismatch)"),
    (["predict", "model.npz", "latin1.csv"], "latin1.csv: not UTF-8 text (byte 23)"),
    (["predict", "resigned.npz", "data.csv"], "resigned.npz: names 1 class labels for a model with 3 outputs"),
    (["train", "--resume", "corrupt.npz"], "checksum mismatch"),
]


def test_the_command_says_one_line_and_exits_1(hostile):
    """Through the real executable, all at once (each start costs about a second)."""
    procs = [
        (args, message, subprocess.Popen([JITPROP, *args], cwd=hostile, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for args, message in CLI
    ]
    for args, message, proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, (args, out, err)
        assert out == "" and len(err.splitlines()) == 1 and err.startswith("Error: "), (args, err)
        assert message in err, (args, err)
    assert not (hostile / "unpickled").exists()
