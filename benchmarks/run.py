"""jitprop against PyTorch eager and plain NumPy on the configurations of shared/guide/PERF.md.

    python benchmarks/run.py                 # S, M, L, C, Cs; writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick         # tiny settings, a smoke test (no file written)
    python benchmarks/run.py --configs S     # one configuration
    python benchmarks/run.py --render benchmarks/RESULTS.json  # the report again from a run's measurements

Method: float32, 2 threads, the same initial weights and the same batches
in the same order for every system, Adam (lr 1e-3). After a warm-up epoch,
the systems take turns, one epoch each per round (A B C, B C A, C A B, ...),
so a slow phase of the machine hits all of them alike and none always
follows the same other; each system's epoch time is the time inside its
training loop. Reported: median samples/s (min-max),
the ratio to PyTorch per round, nominal GFLOP/s (samples/s x 6 x sum(in x
out)) and its share of the float32 matrix-product peak, measured before each
round (median of the per-round shares, so a slow phase hits both sides of
the fraction), the final training loss of each (a fast wrong answer shows),
and peak resident memory of each system training M alone in a fresh process.

C and Cs are CNNs (jitprop's ``--model lenet`` on 28x28 random images with
learnable labels, ``--model cnn`` on the digits as 1x8x8 images): jitprop
against PyTorch eager only (no NumPy CNN), from jitprop's initial weights
loaded into both; FLOPs count 6 per multiply-add of the forward products (a
convolution's as its im2col product), and the report adds each one's roofline.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent

# S's epochs last ~2 ms: it runs ten times the rounds, so its medians rest on enough epochs.
CONFIGS = {
    "S": dict(sizes=[64, 64, 10], batch=32, data="digits", round_factor=10),
    "M": dict(sizes=[784, 256, 256, 10], batch=128, data=(60000, 784)),
    "L": dict(sizes=[784, 1024, 1024, 10], batch=256, data=(20000, 784)),
    # CNNs (issue 14): ``sizes`` names an architecture of jitprop.model.architectures and the
    # input shape. C: LeNet-5 on 28x28 images; Cs: the small CNN of ``--model cnn`` on the digits.
    "C": dict(sizes=("lenet", (1, 28, 28)), batch=64, data=(4096, (1, 28, 28))),
    "Cs": dict(sizes=("cnn", (1, 8, 8)), batch=32, data="digit_images", round_factor=4),
}
QUICK = {
    "S": dict(sizes=[64, 64, 10], batch=32, data="digits"),
    "M": dict(sizes=[784, 64, 10], batch=128, data=(1024, 784)),
    "Cs": dict(sizes=("cnn", (1, 8, 8)), batch=32, data="digit_images"),
}


def is_cnn(sizes):
    """True for an image configuration: (architecture, input shape) rather than layer widths."""
    return isinstance(sizes, tuple)


def jitprop_model(sizes, seed=0):
    """The jitprop model of a configuration (float32), initialised from ``seed``."""
    import jitprop
    from jitprop.model.architectures import ARCHITECTURES

    arch, shape = sizes
    return jitprop.Sequential([jitprop.layer(**spec) for spec in ARCHITECTURES[arch](10)], input_shape=shape,
                              dtype="float32", seed=seed)  # fmt: skip


def multiply_adds(sizes):
    """Multiply-adds of one sample's forward pass, per layer: [(layer, m, k, n)] of the products
    that compute it (a convolution as its im2col product: out_channels x taps x output pixels)."""
    if not is_cnn(sizes):
        return [(f"{i}: dense", 1, a, b) for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    model, rows = jitprop_model(sizes), []
    for i, layer in enumerate(model.layers):
        if layer.name == "conv2d":
            c_out, oh, ow = layer.out_shape
            rows.append((f"{i}: conv2d", c_out, layer.in_shape[0] * layer.kernel_size[0] * layer.kernel_size[1], oh * ow))
        elif layer.name == "dense":
            rows.append((f"{i}: dense", 1, layer.in_dim, layer.out_dim))
    return rows


def flops_per_sample(sizes):
    """Nominal FLOPs of a training step per sample: 2 per multiply-add, forward, and twice that backward."""
    return 6 * sum(m * k * n for _, m, k, n in multiply_adds(sizes))


def bytes_per_step(sizes, batch):
    """The least memory traffic of a training step, in bytes (float32): each layer reads its input
    and writes its output forward, reads the output's gradient and the input and writes the input's
    gradient backward; Adam reads weights, gradient and two moments and writes three of them."""
    if is_cnn(sizes):
        model = jitprop_model(sizes)
        dims, params = [int(np.prod(s)) for s in model.shapes], model.n_params
    else:
        dims, params = list(sizes), sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    activations = sum(5 * (a + b) for a, b in zip(dims[:-1], dims[1:]))  # fwd 2, bwd 3 passes
    return 4 * (batch * activations + 7 * params)


def load_data(spec, seed=0):
    """Standardised float32 inputs and int64 labels: digits (80% for training; as 1x8x8 images for
    "digit_images") or synthetic rows (n, d) or images (n, (C, H, W))."""
    if spec in ("digits", "digit_images"):
        from jitprop.default_plugins.datasets import Digits

        table = Digits().load()
        order = np.random.default_rng(seed).permutation(len(table.y))[: int(0.8 * len(table.y))]
        X, y = table.X[order], table.y[order]
        X = (X - X.mean(0)) / (X.std(0) + 1e-8)
        if spec == "digit_images":
            X = X.reshape(-1, 1, 8, 8)
    else:
        # Already standard normal; made in float32 and in place so the process holds one copy.
        n, d = spec
        shape = d if isinstance(d, tuple) else (d,)
        d = int(np.prod(shape))
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((n, d), dtype=np.float32)
        teacher = rng.standard_normal((d, 10), dtype=np.float32)  # labels a network can learn
        y = np.argmax(np.tanh(X @ teacher / np.sqrt(d)) + 0.1 * rng.standard_normal((n, 10), dtype=np.float32), axis=1)
        X = X.reshape(n, *shape)
    return np.ascontiguousarray(X, np.float32), y.astype(np.int64)


def initial_weights(sizes, seed=0):
    """torch.nn.Linear's default initialisation, shared by every system; a CNN's: jitprop's, as its
    ``state_dict`` (torch's keys and shapes)."""
    if is_cnn(sizes):
        return jitprop_model(sizes, seed).state_dict()
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / np.sqrt(fan_in)
        weights.append((rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32),
                        rng.uniform(-bound, bound, fan_out).astype(np.float32)))
    return weights


def epoch_orders(n, seed):
    """The row order of each epoch, exactly as jitprop's Trainer draws it (from seed and epoch)."""
    from jitprop.kernels import feistel_bits, shuffle_key, shuffle_order

    index = np.empty(n, dtype=np.int64)
    epoch = 0
    while True:
        shuffle_order(shuffle_key(seed, epoch), feistel_bits(n), index)
        epoch += 1
        yield index


# -- the three systems ---------------------------------------------------


class Jitprop:
    name = "jitprop"
    loss = "cross_entropy"
    baseline = "pytorch"
    hidden = ("relu",)  # the layers after each hidden dense layer
    transforms = ()  # gradient transforms of the step
    callbacks = ()  # callbacks of the run (before the epoch timer: their epoch-end work is timed)

    def __init__(self, sizes, batch, weights, X, y, seed):
        import jitprop

        if is_cnn(sizes):
            self.model = jitprop_model(sizes, seed)
            self.model.load_state_dict(weights)
        else:
            layers = []
            for units in sizes[1:-1]:
                layers += [jitprop.layer("dense", units=units), *self.hidden]
            layers.append(jitprop.layer("dense", units=sizes[-1]))
            self.model = jitprop.Sequential(layers, input_dim=sizes[0], dtype="float32", seed=seed)
            state = self.model.state_dict()  # a plugin layer's own values stay as it initialised them
            dense = [i for i, layer in enumerate(self.model.layers) if layer.name == "dense"]
            state.update({f"{i}.{k}": v for i, (w, b) in zip(dense, weights) for k, v in (("weight", w), ("bias", b))})
            self.model.load_state_dict(state)
        timer = self.timer = epoch_timer()
        self.trainer = jitprop.Trainer(self.model, self.loss, jitprop.optimizer("adam", lr=1e-3),
                                       batch_size=batch, seed=seed, callbacks=[*self.callbacks, timer],
                                       transforms=self.transforms)  # fmt: skip
        self.X, self.y = X, y

    def epoch(self):
        self.trainer.fit(self.X, self.y, epochs=self.trainer.epoch + 1)
        return self.timer.seconds, self.trainer.history.history["loss"][-1]

    @property
    def compiled(self):
        return self.trainer.backend.name == "compiled"

    def profile_step(self, batches=40):
        """Each kernel of a training step timed in place, in the compiled step's order, on the
        trainer's own buffers, weights and optimizer state: [(part, seconds per batch)]. Each
        kernel is called from Python here, which adds a few µs of dispatch per call."""
        from jitprop.contracts.losses import ACCURACY
        from jitprop.kernels import all_finite, gather, gather_rows
        from jitprop.runtime import threads

        t, model = self.trainer, self.model
        bs = t.batch_size
        acts, caches, deltas = model.workspace(bs, training=True).views(bs)
        yb = np.empty(bs, self.y.dtype)
        index = next(epoch_orders(len(self.y), 1))
        rows = self.X.reshape(len(self.X), -1)  # images as the trainer keeps them: one row a sample
        accuracy = ACCURACY[t.loss.target]
        names = [f"{i}: {layer.name}" for i, layer in enumerate(model.layers)]
        spent = {}

        def timed(part, kernel, *args):
            started = time.perf_counter()
            out = kernel(*args)
            spent[part] = spent.get(part, 0.0) + time.perf_counter() - started
            return out

        # BLAS's threads as the trainer's spans run (runtime/threads.py: by the products' sizes)
        with threads.blas_threads(threads.blas_count(model, bs, t._own_threads())):
            for b in range(batches + 2):
                if b == 2:  # the first two batches only warm the caches
                    spent.clear()
                start = (b * bs) % (len(self.y) - bs)
                timed("gather the batch (rows, labels)", gather_rows, rows, index, start, acts[0])
                timed("gather the batch (rows, labels)", gather(self.y), self.y, index, start, yb)
                for i, kernel in enumerate(model.forward_kernels):
                    timed(f"{names[i]} forward", kernel, model.layer_params[i], model.hypers[i], acts[i], acts[i + 1],
                          caches[i], True, np.uint64(b), *model.last_args(i))
                timed("loss (value and gradient), accuracy", t.loss_kernel, acts[-1], yb, deltas[-1], t.loss_h)
                timed("loss (value and gradient), accuracy", accuracy, acts[-1], yb)
                for i in range(len(model.layers) - 1, -1, -1):
                    timed(f"{names[i]} backward", model.backward_kernels[i], model.layer_params[i], model.hypers[i],
                          acts[i], acts[i + 1], caches[i], deltas[i + 1], deltas[i], model.layer_grads[i], *model.last_args(i))
                timed("finiteness check of the gradients", all_finite, model.grads)
                t.step += 1
                timed(f"optimizer ({t.optimizer.name})", t.opt_kernel, model.params, model.grads, t.opt_state, t.lr, t.opt_h,
                      t.step)
        return [(part, seconds / batches) for part, seconds in spent.items()]


class JitpropPlugin(Jitprop):
    """jitprop with its loss from a plugin module (benchmarks/plugin_loss.py): same fast path?"""

    name = "jitprop+plugin-loss"
    loss = "plugin_cross_entropy"

    def __init__(self, *args):
        import jitprop.plugins

        sys.path.insert(0, str(HERE))
        import plugin_loss

        if not jitprop.plugins.pm.is_registered(plugin_loss):
            jitprop.plugins.register(plugin_loss, name="benchmark-plugin-loss")
        super().__init__(*args)


class JitpropBatchNorm(Jitprop):
    """jitprop with a layer from plugins/: jitprop-batchnorm's batch_norm after each hidden dense
    layer, against torch.nn.BatchNorm1d in the same place (same initial values)."""

    name = "jitprop+batchnorm-plugin"
    baseline = "pytorch+batchnorm"
    hidden = ("batch_norm", "relu")

    def __init__(self, *args):
        import jitprop.plugins
        import jitprop.registry

        if "batch_norm" not in jitprop.registry.tables()["layer"]:  # not pip-installed: load it from plugins/
            sys.path.insert(0, str(HERE.parent / "plugins" / "jitprop-batchnorm"))
            import jitprop_batchnorm

            jitprop.plugins.register(jitprop_batchnorm, name="jitprop-batchnorm")
        super().__init__(*args)


class JitpropGradientNorms(Jitprop):
    """jitprop with a gradient transform that gathers per-layer statistics every batch
    (gradient_norms): what watching every layer's gradients costs, against plain jitprop."""

    name = "jitprop+gradient-norms"
    baseline = "jitprop"
    transforms = ("gradient_norms",)


class JitpropCoach(Jitprop):
    """jitprop with the coach on (issue 15): its statistics gathered in the compiled step every
    batch (update-to-weight ratios, dead ReLUs) and its records made every epoch."""

    name = "jitprop+coach"
    baseline = "jitprop"
    callbacks = ("coach",)


def epoch_timer():
    """A callback timing fit's epoch: shuffle, every batch, logs (fit's argument checks excluded)."""
    import jitprop

    class EpochTimer:
        seconds = None

        @jitprop.hookimpl
        def on_epoch_begin(self):
            self.started = time.perf_counter()

        @jitprop.hookimpl
        def on_epoch_end(self):
            self.seconds = time.perf_counter() - self.started

    return EpochTimer()


class Torch:
    name = "pytorch"
    batch_norm = False

    def __init__(self, sizes, batch, weights, X, y, seed):
        import torch

        torch.set_num_threads(2)
        if is_cnn(sizes):
            self.net = torch_cnn(jitprop_model(sizes))
            self.net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
        else:
            mods = []
            for i in range(len(sizes) - 1):
                mods.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
                if i < len(sizes) - 2:
                    mods += [torch.nn.BatchNorm1d(sizes[i + 1])] if self.batch_norm else []
                    mods.append(torch.nn.ReLU())
            self.net = torch.nn.Sequential(*mods)
            state = self.net.state_dict()
            linear = [i for i, m in enumerate(mods) if isinstance(m, torch.nn.Linear)]
            state.update({f"{i}.{k}": torch.from_numpy(v.copy()) for i, (w, b) in zip(linear, weights)
                          for k, v in (("weight", w), ("bias", b))})  # fmt: skip
            self.net.load_state_dict(state)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.loss = torch.nn.CrossEntropyLoss()
        self.torch, self.batch = torch, batch
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
        self.orders = epoch_orders(len(y), seed)

    def epoch(self):
        torch, bs = self.torch, self.batch
        order = torch.from_numpy(next(self.orders).copy())
        started = time.perf_counter()
        total = 0.0
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss(self.net(self.X[idx]), self.y[idx])
            loss.backward()
            self.opt.step()
            total += loss.item() * len(idx)
        return time.perf_counter() - started, total / len(order)


def torch_cnn(model):
    """torch.nn.Sequential with the modules of a jitprop image model, in its order (so with its
    ``state_dict`` keys)."""
    import torch

    mods = []
    for layer in model.layers:
        if layer.name == "conv2d":
            mods.append(torch.nn.Conv2d(layer.in_shape[0], layer.out_channels, layer.kernel_size, layer.stride,
                                        layer.padding, bias=layer.bias))  # fmt: skip
        elif layer.name == "max_pool2d":
            mods.append(torch.nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding))
        elif layer.name == "dense":
            mods.append(torch.nn.Linear(layer.in_dim, layer.out_dim))
        else:
            mods.append({"relu": torch.nn.ReLU, "flatten": torch.nn.Flatten}[layer.name]())
    return torch.nn.Sequential(*mods)


class TorchBatchNorm(Torch):
    name = "pytorch+batchnorm"
    batch_norm = True


class NumPy:
    """A plain, vectorised NumPy MLP with Adam: what a careful person writes without a framework."""

    name = "numpy"

    def __init__(self, sizes, batch, weights, X, y, seed):
        self.params = [a.copy() for wb in weights for a in wb]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0
        self.batch, self.X, self.y = batch, X, y
        self.orders = epoch_orders(len(y), seed)

    def step(self, xb, yb):
        n_layers = len(self.params) // 2
        acts = [xb]
        for i in range(n_layers):
            z = acts[-1] @ self.params[2 * i].T + self.params[2 * i + 1]
            acts.append(np.maximum(z, 0) if i < n_layers - 1 else z)
        z = acts[-1]
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        loss = -np.log(p[np.arange(len(yb)), yb] + 1e-30).mean()
        g = p
        g[np.arange(len(yb)), yb] -= 1
        g /= len(yb)
        grads = [None] * len(self.params)
        for i in range(n_layers - 1, -1, -1):
            grads[2 * i] = g.T @ acts[i]
            grads[2 * i + 1] = g.sum(0)
            if i:
                g = (g @ self.params[2 * i]) * (acts[i] > 0)
        self.t += 1
        b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-8
        for p_, g_, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g_
            v *= b2
            v += (1 - b2) * g_ * g_
            p_ -= (lr / (1 - b1**self.t)) * m / (np.sqrt(v) / np.sqrt(1 - b2**self.t) + eps)
        return loss

    def epoch(self):
        order = next(self.orders)
        started = time.perf_counter()
        total = 0.0
        for start in range(0, len(order), self.batch):
            idx = order[start : start + self.batch]
            total += self.step(self.X[idx], self.y[idx]) * len(idx)
        return time.perf_counter() - started, total / len(order)


SYSTEMS = {"jitprop": Jitprop, "jitprop+plugin-loss": JitpropPlugin, "jitprop+batchnorm-plugin": JitpropBatchNorm,
           "jitprop+gradient-norms": JitpropGradientNorms, "jitprop+coach": JitpropCoach, "pytorch": Torch, "pytorch+batchnorm": TorchBatchNorm, "numpy": NumPy}


def have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def matmul_peak(sizes=(512, 1024, 2048), repeats=3):
    """Best float32 GFLOP/s of numpy's matrix product: the machine's reference peak."""
    best = 0.0
    for n in sizes:
        a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
        b = a.copy()
        a @ b
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - started) / 1e9)
    return best


def single_core_peak(sizes=(512, 1024), repeats=3):
    """Best float32 GFLOP/s of the BLAS the kernels call (Numba's np.dot: SciPy's OpenBLAS, not
    NumPy's own) on one thread: the arithmetic floor's rate."""
    from numba import njit

    from jitprop.runtime import threads

    product, best = njit(_forward_product), 0.0
    with threads.blas_threads(1):
        for n in sizes:
            a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
            out = np.empty_like(a)
            product(a, a, out, 1)
            for _ in range(repeats):
                started = time.perf_counter()
                product(a, a, out, 1)
                best = max(best, 2 * n**3 / (time.perf_counter() - started) / 1e9)
    return best


def run_config(name, cfg, systems, rounds, seed=0, profile=False, peak_sizes=(1024, 2048)):
    X, y = load_data(cfg["data"], seed)
    weights = initial_weights(cfg["sizes"], seed)
    runners = [SYSTEMS[s](cfg["sizes"], cfg["batch"], weights, X, y, seed) for s in systems]
    first_loss = {}
    for r in runners:
        first_loss[r.name] = r.epoch()[1]  # warm-up: compilation, caches, allocator
    times = {r.name: [] for r in runners}
    losses = {}
    peaks = []
    for round_ in range(rounds):
        if peak_sizes:
            peaks.append(matmul_peak(peak_sizes, 2))
            time.sleep(0.2)  # numpy's BLAS threads spin a while after a product: let them stop
        # Each round starts with the next system: the one that follows PyTorch (whose threads
        # still spin for a moment) or the peak's product runs a few per cent slower, on S by 5-8%.
        for k in range(len(runners)):
            r = runners[(round_ + k) % len(runners)]
            seconds, loss = r.epoch()
            times[r.name].append(seconds)
            losses[r.name] = loss
    n = len(y)
    result = {"config": name, "sizes": cfg["sizes"], "batch": cfg["batch"], "rows": n, "rounds": rounds, "peaks": peaks,
              "systems": {}}
    fps = flops_per_sample(cfg["sizes"])
    for r in runners:
        rates = n / np.array(times[r.name])
        entry = {
            "samples_per_s": float(np.median(rates)),
            "min": float(rates.min()),
            "max": float(rates.max()),
            "gflops": float(np.median(rates) * fps / 1e9),
            "first_epoch_loss": float(first_loss[r.name]),
            "final_loss": float(losses[r.name]),
        }
        if peaks:
            entry["share_of_peak"] = float(np.median(rates * fps / 1e9 / np.array(peaks)))  # per round
        base = getattr(r, "baseline", "pytorch")  # the PyTorch model that computes the same thing
        if base in times and not isinstance(r, Torch):
            ratios = np.array(times[base]) / np.array(times[r.name])  # per round
            entry["ratio_to_pytorch"] = float(np.median(ratios))
            entry["baseline"] = base
            entry["ratio_min"], entry["ratio_max"] = float(ratios.min()), float(ratios.max())
        if isinstance(r, Jitprop):
            entry["compiled_path"] = r.compiled
            if profile and r.name == "jitprop":
                result["step_profile"] = r.profile_step()
        result["systems"][r.name] = entry
    return result


def memory_probe(config, system, rounds):
    """Run in a fresh process: train `config` with one system; print peak RSS in MiB.

    System "numba-floor" trains nothing: it builds the same data, then calls one cached
    @njit function using np.dot, which is the least any Numba-based trainer can hold."""
    cfg = CONFIGS[config]
    if system == "numba-floor":
        from numba import njit

        X, _ = load_data(cfg["data"])
        w = np.ones((cfg["sizes"][1], X.shape[1]), np.float32)
        njit(cache=True)(_floor_dot)(X[: cfg["batch"]], w, np.empty((cfg["batch"], w.shape[0]), np.float32))
    else:
        run_config(config, cfg, [system], rounds, peak_sizes=())  # no peak's matrices in the memory measured
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}))


def _floor_dot(x, w, out):
    np.dot(x, w.T, out)


def peak_rss_mib():
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: the latter
    survives exec, so a child of a large parent would report the parent's size."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(config, systems, rounds):
    """Peak resident MiB of each system's probe, each in a fresh process."""
    import tempfile

    out = {}
    for system in systems:
        cmd = [sys.executable, __file__, "--memory-probe", config, system, "--rounds", str(rounds)]
        with tempfile.TemporaryDirectory() as tmp:
            env = None
            if system == "numba-floor":  # a cache of its own, warmed first: what is measured is a cached call
                env = {**os.environ, "NUMBA_CACHE_DIR": tmp}
                subprocess.run(cmd, capture_output=True, check=True, env=env)
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        out[system] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    return out


def startup_times():
    """Wall time of `jitprop train --dataset digits --epochs 1`: warm cache, and cold cache."""
    import tempfile

    exe = str(Path(sys.executable).with_name("jitprop"))
    cmd = [exe, "train", "--dataset", "digits", "--epochs", "1"]
    # As installed for a user, Python's own bytecode is cached too (pip compiles it; an
    # editable install writes it on first use): a PYTHONDONTWRITEBYTECODE left in the
    # environment would recompile jitprop's modules in every run.
    # Third-party plugins installed here (plugins/ in a development venv) are not loaded:
    # the process measured is the README's, after `pip install .`.
    base = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "JITPROP_LOAD_PLUGINS": ""}
    subprocess.run(cmd, capture_output=True, check=True, env=base)  # make sure the caches are warm
    warm = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, env=base)
        warm.append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**base, "JITPROP_CACHE_DIR": tmp, "NUMBA_CACHE_DIR": tmp}
        started = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, env=env)
        cold = time.perf_counter() - started
        # The floor: a process that only calls one cached @njit function using np.dot.
        floor_script = Path(tmp) / "floor.py"
        floors = {}
        for key, source in (("floor_s", FLOOR), ("floor_loop_s", FLOOR_LOOP)):
            floor_script.write_text(source)
            subprocess.run([sys.executable, str(floor_script)], check=True, env=env)
            times = []
            for _ in range(3):
                started = time.perf_counter()
                subprocess.run([sys.executable, str(floor_script)], check=True, env=env)
                times.append(time.perf_counter() - started)
            floors[key] = float(np.median(times))
    return {"warm_s": float(np.median(warm)), "cold_s": cold, **floors}


FLOOR = """import numpy as np
from numba import njit


@njit(cache=True)
def f(a, b, c):
    np.dot(a, b, c)


a = np.ones((2, 2), np.float32)
f(a, a, a.copy())
"""

FLOOR_LOOP = """import numpy as np
from numba import njit


@njit(cache=True)
def f(a):
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i]
    return s


f(np.ones(4, np.float32))
"""


def machine():
    import numba

    info = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
    }
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    if have_torch():
        import torch

        info["torch"] = torch.__version__
    import jitprop

    info["jitprop"] = jitprop.__version__
    return info


def _forward_product(x, w, out, reps):
    for _ in range(reps):
        np.dot(x, w.T, out)  # as dense_forward: the weights' transpose as strides


def _weight_grad_product(g, x, out, reps):
    for _ in range(reps):
        np.dot(g.T, x, out)  # as dense_backward: dL/dW = dL/dout^T . x


def _input_grad_product(g, w, out, reps):
    for _ in range(reps):
        np.dot(g, w, out)  # as dense_backward: dL/dx = dL/dout . W (not for the first layer)


def _conv_forward_product(w, col, out, reps):
    for _ in range(reps):
        np.dot(w, col, out)  # as conv2d_forward, per sample: W . col


def _conv_weight_grad_product(g, col, out, reps):
    for _ in range(reps):
        np.dot(col, g.T, out)  # as conv2d_backward, per sample: dL/dW^T = col . dL/dy^T


def _conv_input_grad_product(w, g, out, reps):
    for _ in range(reps):
        np.dot(w.T, g, out)  # as conv2d_backward, per sample: dL/dcol = W^T . dL/dy


def product_profile(sizes, batch, seconds_each=0.15):
    """Each matrix product of one training step timed alone through Numba's np.dot, as the
    kernels call it: [(name, (m, k, n), median seconds per batch, products per batch)]. A
    convolution's are per sample (``batch`` of each), on the columns as the kernel lays them out.
    Their sum is the most any step built on that BLAS can reach on these shapes; the rest of
    jitprop's step is everything else."""
    from numba import njit

    forward, weight_grad, input_grad = njit(_forward_product), njit(_weight_grad_product), njit(_input_grad_product)
    rng = np.random.default_rng(0)
    arr = lambda *shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    layers = []  # (number, in, out), or (number, c_out, taps, columns) for a convolution
    if is_cnn(sizes):
        for i, layer in enumerate(jitprop_model(sizes).layers):
            if layer.name == "dense":
                layers.append((i, layer.in_dim, layer.out_dim))
            elif layer.name == "conv2d":
                taps = layer.in_shape[0] * layer.kernel_size[0] * layer.kernel_size[1]
                layers.append((i, layer.out_channels, taps, layer.cache_dim() // taps))
    else:
        layers = [(i + 1, d_in, d_out) for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:]))]
    rows = []
    for n, layer in enumerate(layers):
        i = layer[0]
        if len(layer) == 3:
            d_in, d_out = layer[1:]
            x, w, g = arr(batch, d_in), arr(d_out, d_in), arr(batch, d_out)
            products = [(f"layer {i} forward", forward, (x, w, arr(batch, d_out)), (batch, d_in, d_out)),
                        (f"layer {i} weight gradient", weight_grad, (g, x, arr(d_out, d_in)), (d_out, batch, d_in))]
            if n > 0:
                products.append((f"layer {i} input gradient", input_grad, (g, w, arr(batch, d_in)), (batch, d_out, d_in)))
            count = 1
        else:
            c_out, taps, cols = layer[1:]
            w, col, g = arr(c_out, taps), arr(taps, cols), arr(c_out, cols)
            products = [(f"layer {i} forward (conv2d)", njit(_conv_forward_product), (w, col, arr(c_out, cols)), (c_out, taps, cols)),
                        (f"layer {i} weight gradient (conv2d)", njit(_conv_weight_grad_product), (g, col, arr(taps, c_out)),
                         (taps, cols, c_out))]  # fmt: skip
            if n > 0:
                products.append((f"layer {i} input gradient (conv2d)", njit(_conv_input_grad_product), (w, g, arr(taps, cols)),
                                 (taps, c_out, cols)))  # fmt: skip
            count = batch
        for name, f, args, shape in products:
            f(*args, 1)
            started = time.perf_counter()
            f(*args, 3 * count)
            reps = max(1, int(seconds_each / 7 / max((time.perf_counter() - started) / 3, 1e-7)))
            times = []
            for _ in range(7):
                started = time.perf_counter()
                f(*args, reps * count)
                times.append((time.perf_counter() - started) / reps)
            rows.append((name, shape, float(np.median(times)), count))
    return rows


SWEEP_TARGET = 0.6  # issue 15: 8 sweep runs of S-sized models in at most 0.6x their time one after another
SWEEP_GRID = dict(lr=[1e-3, 2e-3, 5e-3, 1e-2], batch_size=[32, 64], hidden=[[64]], epochs=[50])


def sweep_speed(rounds):
    """The sweep probe's numbers, measured in a process of its own: as a user's ``jitprop sweep``
    runs, not forked from this one, which holds PyTorch's thread pools and every config's data."""
    cmd = [sys.executable, __file__, "--sweep-probe", "--rounds", str(rounds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def sweep_probe(rounds):
    """8 runs of S's model (4 learning rates x 2 batch sizes, 50 epochs each on digits) as one
    ``jitprop.sweep`` on every core, against the same sweep with one worker: interleaved rounds."""
    import jitprop
    from jitprop.data.tables import load_table

    table = load_table("digits")
    X = table.X.astype(np.float32)
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    jitprop.sweep(X, table.y, **{**SWEEP_GRID, "epochs": [1]})  # compiled (or loaded) once, before timing
    parallel, serial, ratios, workers = [], [], [], 1
    for _ in range(rounds):
        many = jitprop.sweep(X, table.y, **SWEEP_GRID)
        one = jitprop.sweep(X, table.y, workers=1, **SWEEP_GRID)
        parallel.append(many.seconds)
        serial.append(one.seconds)
        ratios.append(many.seconds / one.seconds)
        workers = many.workers
    print(json.dumps({"runs": len(many), "workers": workers, "parallel_s": float(np.median(parallel)),
                      "serial_s": float(np.median(serial)), "ratio": float(np.median(ratios)),
                      "ratio_min": float(min(ratios)), "ratio_max": float(max(ratios))}))  # fmt: skip


def report(results, peak, mem, startup, info, sweeps=None):
    rounds_peaks = [g for res in results for g in res.get("peaks", ())]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python benchmarks/run.py` on {info['date']}. Method: see the docstring of `benchmarks/run.py`.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in info.items()),
        f"| float32 matmul peak (numpy, start of run) | {peak:.0f} GFLOP/s |",
        *([f"| the same on one thread (start of run) | {results[0]['single_core_peak']:.0f} GFLOP/s |"]
          if results and "single_core_peak" in results[0] else []),
        *([f"| the same, before each round | {min(rounds_peaks):.0f}-{max(rounds_peaks):.0f} GFLOP/s |"] if rounds_peaks else []),
        "",
        "| config | system | samples/s (median) | min-max | x PyTorch (median, min-max) | GFLOP/s | % of peak | loss after epoch 1 | final loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for name, e in res["systems"].items():
            ratio = f"{e['ratio_to_pytorch']:.2f} ({e['ratio_min']:.2f}-{e['ratio_max']:.2f})" if "ratio_to_pytorch" in e else "1"
            lines.append(
                f"| {res['config']} {label(res['sizes'])} b{res['batch']} | {name} | {e['samples_per_s']:,.0f} | "
                f"{e['min']:,.0f}-{e['max']:,.0f} | {ratio} | {e['gflops']:.1f} | {100 * peak_share(e, peak):.0f}% |"
                f" {e['first_epoch_loss']:.5f} | {e['final_loss']:.4f} |"
            )
    baselines = sorted({f"{name} against {e['baseline']}" for res in results for name, e in res["systems"].items()
                        if e.get("baseline", "pytorch") != "pytorch"})
    if baselines:
        lines += ["", "x PyTorch: each system against the PyTorch model that computes the same thing (" +
                  ", ".join(baselines) + ")."]
    lines += ["", "## Targets (issues 4, 14, 15 and 19)", "", "| target | measured | met |", "|---|---|---|"]
    for target, value, ok in targets(results, peak, mem, startup, sweeps):
        lines.append(f"| {target} | {value} | {'yes' if ok else '**no**'} |")
    if any(not ok for _, _, ok in targets(results, peak, mem, startup, sweeps)):
        lines += ["", MISSES]
    for res in results:
        if res.get("profile"):
            lines += ["", *profile_lines(res, peak)]
    if mem:
        lines += ["", "Peak resident memory training M alone in a fresh process: " +
                  ", ".join(f"{k} {v:.0f} MiB" for k, v in mem.items()) +
                  (" (numba-floor: the same data, and one cached `@njit` call of `np.dot`)" if "numba-floor" in mem else "")]
    if sweeps:
        lines += ["", f"Sweeps: {sweeps['runs']} runs of S's model (4 learning rates x 2 batch sizes, 50 epochs each, on digits)"
                      f" as one `jitprop.sweep` (in a process of its own, as `jitprop sweep` runs) on {sweeps['workers']} workers took {sweeps['parallel_s']:.2f} s, one after"
                      f" another {sweeps['serial_s']:.2f} s: {sweeps['ratio']:.2f}x (median of interleaved rounds,"
                      f" {sweeps['ratio_min']:.2f}-{sweeps['ratio_max']:.2f})."]  # fmt: skip
    if startup:
        lines += ["", f"`jitprop train --dataset digits --epochs 1`, whole process (median of 5; built-in plugins only,"
                  f" as after the README's install): warm cache {startup['warm_s']:.2f} s, cold cache {startup['cold_s']:.2f} s."]
        if "floor_s" in startup:
            lines += ["", f"For comparison, a Python process that only imports Numba and calls one cached `@njit`"
                      f" function using `np.dot` takes {startup['floor_s']:.2f} s here (Numba imports all of"
                      f" scipy.linalg for it; jitprop loads only its BLAS module); one whose cached function is a"
                      f" plain loop (no BLAS, no SciPy) takes {startup['floor_loop_s']:.2f} s."]
    return "\n".join(lines) + "\n"


def label(sizes):
    """A configuration's model in a table: layer widths, or "lenet 1x28x28"."""
    return f"{sizes[0]} {'x'.join(map(str, sizes[1]))}" if is_cnn(sizes) else str(sizes)


def micro(seconds):
    """Seconds as µs for a table: a decimal below 100 µs (S's kernels take 0.1-5)."""
    us = seconds * 1e6
    return f"{us:.1f}" if us < 100 else f"{us:,.0f}"


def profile_lines(res, peak):
    """Where one step of a configuration goes: each kernel in place, then each matrix product alone."""
    batch, lines = res["batch"], []
    peak = res.get("profile_peak", peak)
    e = res["systems"].get("jitprop")
    if res.get("step_profile"):
        parts = res["step_profile"]
        total = sum(seconds for _, seconds in parts)
        lines += [f"Where a {res['config']} step goes (same run): each kernel of jitprop's step in place, in order, called"
                  " from Python (a few µs of dispatch each that the compiled step does not pay).", "",
                  "| kernel | µs per batch | share |", "|---|---|---|"]
        lines += [f"| {part} | {micro(seconds)} | {seconds / total:.0%} |" for part, seconds in parts]
        lines += [f"| sum | {micro(total)} | |"]
        if e:
            lines += [f"| the compiled step, for comparison (median epoch time / batches) | {micro(batch / e['samples_per_s'])} | |"]
        lines.append("")
    rows = res["profile"]
    lines += [f"Each matrix product of a {res['config']} step alone, as the kernels call it (Numba's `np.dot`; a"
              f" convolution's once per sample, its µs per batch), median: what any step built on that BLAS can reach"
              f" on these shapes (peak measured just before: {peak:.0f} GFLOP/s).", "",
              "| product | m x k x n | µs per batch | GFLOP/s | % of peak |", "|---|---|---|---|---|"]
    for name, (m, k, n), seconds, *count in rows:
        gflops = 2 * m * k * n * (count[0] if count else 1) / seconds / 1e9
        shown = f"{m} x {k} x {n}" + (f", x{count[0]}" if count and count[0] > 1 else "")
        lines.append(f"| {name} | {shown} | {micro(seconds)} | {gflops:.0f} | {100 * gflops / peak:.0f}% |")
    products = sum(row[2] for row in rows)
    gflops = batch * flops_per_sample(res["sizes"]) / products / 1e9
    lines.append(f"| all products | | {micro(products)} | {gflops:.0f} | {100 * gflops / peak:.0f}% |")
    figures = step_figures(res)
    if figures:
        step, products, flops = figures
        cores = res.get("step_cores", 1)
        floor = flops / (cores * res["single_core_peak"] * 1e9)
        at = "the single-core peak" if cores == 1 else f"{cores} times the single-core peak (the step runs on {cores} cores)"
        alone = "" if cores == res.get("product_threads", 1) else f" (their one-thread sum over {cores} cores)"
        lines += ["", f"jitprop's {res['config']} step: {step * 1e6:,.1f} µs a batch (median epoch time / batches), {step / products:.2f}x"
                      f" its products alone{alone}. Those products are {flops / 1e6:,.2f} MFLOP: at {at}, measured at the start of the"
                      f" run ({res['single_core_peak']:.0f} GFLOP/s a core), they take {floor * 1e6:,.1f} µs, the step's"
                      f" arithmetic floor; the step is {step / floor:.2f}x that floor."]  # fmt: skip
    if is_cnn(res["sizes"]):  # the roofline of the step
        flops, moved = batch * flops_per_sample(res["sizes"]), bytes_per_step(res["sizes"], batch)
        lines += ["", f"Roofline of a {res['config']} step (batch {batch}): {flops / 1e6:,.1f} MFLOP (nominal: 6 per"
                  f" multiply-add of the forward products) and at least {moved / 1e6:,.2f} MB moved (each activation and"
                  f" its gradient written once and read where needed, and Adam's pass over the weights):"
                  f" {flops / moved:.0f} FLOP a byte."]
        for name, e in res["systems"].items():
            step = batch / e["samples_per_s"]
            lines.append(f"- {name}: {step * 1e3:.2f} ms a step, {flops / step / 1e9:.1f} GFLOP/s,"
                         f" {100 * flops / step / 1e9 / peak:.0f}% of the {peak:.0f} GFLOP/s peak.")
    return lines


TARGETS = {"S": (25.0, None), "M": (1.5, 0.80), "L": (1.2, 0.85), "C": (2.0, None), "Cs": (10.0, None)}
#: What per-layer gradient statistics may cost S (the redesign issue).
STATS_COST = 0.05
COACH_COST = 0.10  # issue 15: the coach costs S at most 10%
#: Issue 19 (performance, second round): S, M and L against PyTorch eager; M's and L's step against
#: its own products timed alone; M's peak memory against the Numba floor process and PyTorch's; a
#: warm start against the floor process that calls one cached @njit loop, and a cold one. Each
#: profiled step is also set against its arithmetic floor (its products' FLOPs at the single-core
#: peak), reported beside the profiles with no target.
SECOND_ROUND = {"S": 35.0, "M": 2.0, "L": 1.3}
STEP_OVER_PRODUCTS = {"M": 1.15, "L": 1.15}
MEMORY_OVER_FLOOR, MEMORY_OF_PYTORCH = 1.05, 0.65
WARM_OVER_FLOOR, COLD_S = 1.05, 10.0


MISSES = """### Why a target is missed (profiles above; arithmetic: benchmarks/README.md)

Runs on this machine move by 10-30% with its slow phases (one run of
2026-12-08 had M at 1.24x, its three systems all 35% slower for the whole
config, the next 1.77x), so a target near its line is met in one run and
missed in the next. Ranges are from the runs of 2026-12-08.

- **S at 35x PyTorch (issue 19; 25x earlier: met).** 25.2-27.3x. S's step
  through `fit` is 15.8-17.4 us; 35x needs ~12.5. Its products alone take
  7.9 us on one thread, 2.2x less than the step, and their 0.65 MFLOP at
  the single-core peak 6.3 us (the step is 2.8x that floor). The forward
  product `x W^T` (32 x 64 x 64, the weights' transpose as strides) runs at
  62 GFLOP/s in OpenBLAS where the same product with the weights
  transposed in memory takes 2.5 us against 4.2; transposing each step to
  get it gained 1 us at 64 x 64 and lost on every other shape timed, and
  Numba-compiled loops reached 24 GFLOP/s. The rest, timed in compiled
  loops: cross-entropy 1.2 us (2.2 before its exps were vectorised), Adam
  1.4-1.9 us (its division and square root per parameter), gather,
  accuracy and the finiteness check 0.6 us, the epoch's shuffle, logs and
  hooks ~2 us a batch. 35x needs products blocked for registers on these
  shapes (a microkernel of our own beating OpenBLAS's) and fused layers.
- **M at 2.0x and L at 1.3x PyTorch (issue 19), L at 1.2x (issue 4).**
  M 1.60-1.81x (1.24x in the slow run), L 1.03-1.29x. In the run above,
  PyTorch's M step took 2.14 ms: 2.0x means 1.07 ms, and M's products alone
  took 0.92 ms, Adam's pass alone ~0.11 ms (its division and square root
  per parameter) and the gather 0.06 ms, 1.09 ms before anything else.
  PyTorch's L step took 19.7 ms: 1.3x means 15.2 ms, what L's products
  alone took (15.2 ms). Both need OpenBLAS's products themselves faster on
  these thin shapes.
- **Step at most 1.15x its products alone (issue 19).** M 1.29-1.35x, L
  1.16-1.27x with BLAS's count fixed (1.49-1.57x while training tried one
  thread against two by default: the trials cost L 15-25%, and are now
  asked for with `--threads auto`).
  M's step adds to its 0.92 ms of products Adam's pass over 269 k
  parameters (0.16 ms: 7.5 MB of moments, weights and gradients read and
  written), the batch gather (0.06 ms of random rows from 188 MB), the
  activations, bias, loss and finiteness check (~0.07 ms), and its first
  layer's weight gradient takes 0.33 ms in place against 0.29 alone (its
  inputs gone from cache): 1.15x would leave 0.14 ms for all of that, less
  than Adam alone. L's Adam takes 1.4-3.8 ms in place (slow phases) of a
  17.6 ms step.
- **Share of the matmul peak (M 80%, L 85%; issue 4, replaced by the
  ratio above).** The peak is numpy's best on large square products and
  moves within a run (178-210 GFLOP/s); OpenBLAS's products alone on M's
  and L's thin shapes came to 76-104% of it, the output layer's 11-50%.
- **Peak memory at half PyTorch's (M; issue 4, replaced).** 0.62x: a
  process holding only the data and one cached Numba call (the
  numba-floor) already sits at 0.60x; jitprop is within 2.3% of it.
- **CNNs: C at 2x, Cs at 10x (issue 14).** C 1.57-1.95x, Cs 3.3-3.8x. Their
  products (one thread each, conv2d's chunks over both cores) are 0.9 ms
  of C's 2.8 ms step and 0.11 ms of Cs's 0.44 ms; the rest is unfolding and
  folding (im2col, col2im), pooling and the activations' traffic (a C step
  reads and writes at least 41 MB: each layer runs over the whole batch
  before the next starts). 2x on C needs fewer passes over the activations
  (conv, ReLU and pool fused, or the batch run through the network in
  chunks that stay in cache); Cs's 10x means a 0.14 ms step, little more
  than its products alone, with unfolding and pooling still to do.
- **Sweep at 0.6x (issue 15).** 0.61-0.68x in today's runs (0.59-0.64
  before): 8 runs of 0.04 s each on 2 workers, where forking the workers
  and their first compiled call are a fixed share; two lone processes
  reach ~1.2x one, not 2x (the cores share their memory traffic).
"""


def step_figures(res):
    """(jitprop's step in seconds, its products alone in seconds, their FLOPs) for a profiled
    configuration, or None. The step is the median epoch's time over its batches: what ``fit`` takes,
    the epoch's shuffle and logs included."""
    e, rows = res["systems"].get("jitprop"), res.get("profile")
    if not e or not rows or "single_core_peak" not in res:
        return None
    step = res["batch"] / e["samples_per_s"]
    flops = sum(2 * m * k * n * (count[0] if count else 1) for _, (m, k, n), _, *count in rows)
    # A CNN's products, timed one after another on one thread, run in its step on every core at once.
    spread = res.get("step_cores", 1) // res.get("product_threads", 1)
    return step, sum(row[2] for row in rows) / spread, flops


def peak_share(entry, peak):
    """A system's share of the matmul peak: per round where measured so, else against `peak`."""
    return entry.get("share_of_peak", entry["gflops"] / peak)


def targets(results, peak, mem, startup, sweeps=None):
    """(target, measured, met) rows for the targets of the performance issue."""
    rows = []
    for res in results:
        e = res["systems"].get("jitprop", {})
        ratio, share = TARGETS.get(res["config"], (None, None))
        if ratio and "ratio_to_pytorch" in e:
            rows.append((f"{res['config']}: >= {ratio}x PyTorch eager", f"{e['ratio_to_pytorch']:.2f}x", e["ratio_to_pytorch"] >= ratio))
            for name, p in res["systems"].items():  # the same target for models built with plugins' kernels
                if name.startswith("jitprop+") and "ratio_to_pytorch" in p and p["baseline"] != "jitprop":
                    rows.append((f"{res['config']} as {name}: >= {ratio}x {p['baseline']}", f"{p['ratio_to_pytorch']:.2f}x",
                                 p["ratio_to_pytorch"] >= ratio))
        c = res["systems"].get("jitprop+coach", {})
        if "ratio_to_pytorch" in c:  # against plain jitprop, too
            cost = 1.0 / c["ratio_to_pytorch"] - 1.0
            rows.append((f"{res['config']}: the coach's statistics and records cost < {COACH_COST:.0%}", f"{cost:+.1%}", cost < COACH_COST))
        g = res["systems"].get("jitprop+gradient-norms", {})
        if "ratio_to_pytorch" in g:  # against plain jitprop: the cost of gathering gradient statistics
            cost = 1.0 / g["ratio_to_pytorch"] - 1.0
            rows.append((f"{res['config']}: gradient statistics (gradient_norms) cost < {STATS_COST:.0%}", f"{cost:+.1%}",
                         cost < STATS_COST))
        if share:
            got = peak_share(e, peak)
            rows.append((f"{res['config']}: >= {share:.0%} of the matmul peak", f"{got:.0%}", got >= share))
    if mem and "pytorch" in mem:
        rows.append(("M: peak memory <= half of PyTorch's", f"{mem['jitprop'] / mem['pytorch']:.0%} of PyTorch's", mem["jitprop"] <= 0.5 * mem["pytorch"]))
    if sweeps:
        rows.append((f"sweep of {sweeps['runs']} S runs: <= {SWEEP_TARGET}x their time one after another", f"{sweeps['ratio']:.2f}x",
                     sweeps["ratio"] <= SWEEP_TARGET))  # fmt: skip
    if startup:
        rows.append(("start-up, warm cache: <= 1.0 s", f"{startup['warm_s']:.2f} s", startup["warm_s"] <= 1.0))
        rows.append(("start-up, cold cache: <= 12 s", f"{startup['cold_s']:.2f} s", startup["cold_s"] <= 12.0))
    for res in results:  # issue 19's, beside the earlier ones
        e, ratio = res["systems"].get("jitprop", {}), SECOND_ROUND.get(res["config"])
        if ratio and "ratio_to_pytorch" in e:
            rows.append((f"{res['config']}: >= {ratio}x PyTorch eager (issue 19)", f"{e['ratio_to_pytorch']:.2f}x",
                         e["ratio_to_pytorch"] >= ratio))  # fmt: skip
    for res in results:
        figures, most = step_figures(res), STEP_OVER_PRODUCTS.get(res["config"])
        if figures and most:
            over = figures[0] / figures[1]
            rows.append((f"{res['config']}: step <= {most}x its matrix products timed alone (issue 19)", f"{over:.2f}x", over <= most))
    if mem and "numba-floor" in mem:
        over = mem["jitprop"] / mem["numba-floor"]
        rows.append((f"M: peak memory <= {MEMORY_OVER_FLOOR}x the numba-floor process (issue 19)", f"{over:.3f}x",
                     over <= MEMORY_OVER_FLOOR))  # fmt: skip
    if mem and "pytorch" in mem:
        share = mem["jitprop"] / mem["pytorch"]
        rows.append((f"M: peak memory <= {MEMORY_OF_PYTORCH}x PyTorch's (issue 19)", f"{share:.2f}x", share <= MEMORY_OF_PYTORCH))
    if startup and "floor_loop_s" in startup:
        over = startup["warm_s"] / startup["floor_loop_s"]
        rows.append((f"start-up, warm: <= {WARM_OVER_FLOOR}x a process calling one cached @njit loop (issue 19)",
                     f"{over:.2f}x", over <= WARM_OVER_FLOOR))  # fmt: skip
        rows.append((f"start-up, cold: <= {COLD_S:g} s (issue 19)", f"{startup['cold_s']:.2f} s", startup["cold_s"] <= COLD_S))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="S,M,L,C,Cs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny settings; prints, writes nothing")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-startup", action="store_true")
    parser.add_argument("--no-sweep", action="store_true", help="skip the sweep's parallel speed-up")
    parser.add_argument("--memory-probe", nargs=2, metavar=("CONFIG", "SYSTEM"))
    parser.add_argument("--sweep-probe", action="store_true", help="time the sweep's speed-up in this process; print JSON")
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--render", metavar="JSON", help="write the report again from a run's saved measurements (no timing)")
    args = parser.parse_args(argv)
    if args.render:  # the measurements a run saved beside its report, the text around them as this script now has it
        saved = json.loads(Path(args.render).read_text())
        for res in saved["results"]:  # JSON made a CNN's (architecture, shape) a list
            if isinstance(res["sizes"][0], str):
                res["sizes"] = (res["sizes"][0], tuple(res["sizes"][1]))
        Path(args.output).write_text(report(saved["results"], saved["peak"], saved["mem"], saved["startup"], saved["info"],
                                            saved["sweeps"]))  # fmt: skip
        print(f"wrote {args.output}")
        return saved["results"]
    if args.sweep_probe:
        sweep_probe(args.rounds)
        return None
    if args.memory_probe:
        memory_probe(*args.memory_probe, args.rounds)
        return None
    systems = ["jitprop", "numpy"] + (["pytorch"] if have_torch() else [])
    table = QUICK if args.quick else CONFIGS
    names = [c for c in args.configs.split(",") if c in table]
    rounds = 2 if args.quick else args.rounds
    peak = matmul_peak((256,), 1) if args.quick else matmul_peak()
    peak_sizes = (256,) if args.quick else (1024, 2048)
    from jitprop.runtime import threads

    info_peak1 = single_core_peak((256,) if args.quick else (512, 1024))
    results = []
    for name in names:
        # S also trains with plugins' kernels in the compiled step: a loss (benchmarks/plugin_loss.py)
        # and a layer from plugins/ (against PyTorch with the same layer).
        with_plugins = systems[:1] + ["jitprop+plugin-loss", "jitprop+batchnorm-plugin", "jitprop+gradient-norms"]
        with_plugins += ([] if args.quick else ["jitprop+coach"]) + systems[1:]  # --quick: a smoke test, one compile less
        with_plugins += ["pytorch+batchnorm"] if "pytorch" in systems else []
        # Configurations with a share target are bound by their products: they get a peak before
        # each round and profiles. The others (S: fixed per-batch costs) get no peak between their
        # rounds, where a 2 ms epoch right after a large product would be timed with cold caches.
        by_products = TARGETS.get(name, (None, None))[1] is not None
        cnn = is_cnn(table[name]["sizes"])  # PyTorch's and jitprop's CNNs (no NumPy one), profiled too
        res = run_config(name, table[name], with_plugins if name == "S" else [x for x in systems if x != "numpy"] if cnn else systems,
                         rounds * table[name].get("round_factor", 1), profile=True,
                         peak_sizes=peak_sizes if by_products else ())  # fmt: skip
        # Every configuration is profiled after its rounds: each kernel in place, and each product
        # alone, on the threads the step runs its products on: one for a CNN's chunks and for S (below
        # the size rule's threshold), else every core.
        res["profile_peak"] = matmul_peak(peak_sizes, 2)
        res["single_core_peak"] = info_peak1
        # As runtime/threads.py gives the step: BLAS on one thread for S and for a CNN, whose kernels
        # split the batch over the cores themselves; every core for M and L.
        res["product_threads"] = 1 if cnn or name == "S" else threads.cores()
        res["step_cores"] = 1 if name == "S" else threads.cores()
        with threads.blas_threads(res["product_threads"]):
            res["profile"] = product_profile(table[name]["sizes"], table[name]["batch"], 0.02 if args.quick else 0.15)
        results.append(res)
        for system, e in res["systems"].items():
            ratio = f"  x{e['ratio_to_pytorch']:.2f} {e['baseline']}" if "ratio_to_pytorch" in e else ""
            print(f"{name} {system:8s} {e['samples_per_s']:>12,.0f} samples/s  {e['gflops']:6.1f} GFLOP/s"
                  f"  loss {e['final_loss']:.4f}{ratio}", flush=True)
    mem = {} if args.quick or args.no_memory or "M" not in names else peak_memory("M", systems + ["numba-floor"], 1)
    startup = {} if args.quick or args.no_startup else startup_times()
    sweeps = {} if args.quick or args.no_sweep or "S" not in names else sweep_speed(max(7, args.rounds))
    if sweeps:
        print(f"sweep of {sweeps['runs']} S runs on {sweeps['workers']} workers: {sweeps['ratio']:.2f}x their time one after another")
    info = machine()
    text = report(results, peak, mem, startup, info, sweeps)
    if not args.quick:
        Path(args.output).write_text(text)
        saved = dict(results=results, peak=peak, mem=mem, startup=startup, info=info, sweeps=sweeps)
        Path(args.output).with_suffix(".json").write_text(json.dumps(saved, indent=1) + "\n")
        print(f"wrote {args.output} and the measurements behind it, {Path(args.output).with_suffix('.json').name}")
    return results


if __name__ == "__main__":
    main()
