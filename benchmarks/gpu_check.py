"""The real-GPU check: every CUDA kernel against its CPU kernel, then training throughput.

    python benchmarks/gpu_check.py              # on a machine with an NVIDIA GPU (< 5 minutes)
    python benchmarks/gpu_check.py --quick      # tiny shapes, no throughput (also runs on the simulator)

Part 1 compares every registered layer's, loss's, optimizer's, schedule's and
gradient transform's CUDA kernels with its CPU kernel (a schedule's with its host rate) on fresh random inputs of awkward shapes (float32
tolerance). Part 2 trains the configurations of shared/guide/PERF.md with
jitprop on the GPU and, when PyTorch with CUDA is installed, with PyTorch on
the same GPU in the same run, and prints a table with the card's name
(paste it into benchmarks/RESULTS.md with the date).
"""

import argparse
import inspect
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def check_kernels(shapes=((1, 3), (7, 5), (33, 17), (130, 70)), lengths=(1, 1001, 300_017),
                  images=((1, None), (7, (3, 13, 11)), (33, (4, 28, 28)))):  # fmt: skip
    """Largest relative error of each CUDA kernel against its CPU kernel: layers on (batch, width)
    ``shapes`` or, for image layers, (batch, sample shape) ``images`` (None: the layer's example)."""
    from numba import cuda

    import jitprop
    from jitprop.components import kernel
    from jitprop.gradcheck import example_targets
    from jitprop.kernels import mix_seed
    from jitprop.registry import entries

    rng = np.random.default_rng(int(time.time()))
    rows = []
    skipped = []  # plugins' parts that train on the CPU only

    def on_gpu(kind, entry, attr):
        if inspect.getattr_static(entry.cls, attr, None) is None:
            skipped.append(f"{kind} {entry.name} (plugin {entry.plugin}): no {attr}")
            return False
        return True

    def rel(a, b):
        return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))

    for entry in entries("layer"):
        if not on_gpu("layer", entry, "cuda_forward"):
            continue
        options = getattr(entry.cls, "example_options", {})
        image = getattr(entry.cls, "example_shape", None) is not None
        cases = [(b, shape or entry.cls.example_shape) for b, shape in images] if image else [(b, (w,)) for b, w in shapes]
        for batch, in_shape in cases:
            model = jitprop.Sequential([jitprop.layer(entry.name, **options)], input_shape=in_shape, seed=1)
            model.params[...] = rng.normal(0, 0.5, model.n_params)
            layer, p, h = model.layers[0], model.layer_params[0], model.hypers[0]
            width = model.input_dim
            x = rng.normal(size=(batch, width)).astype(np.float32)
            go = rng.normal(size=(batch, model.output_dim)).astype(np.float32)
            out = np.zeros((batch, model.output_dim), np.float32)
            cache = np.zeros((batch, layer.cache_dim()), np.float32)
            gi, gp = np.zeros_like(x), np.zeros_like(p)
            seed = mix_seed(3, 1)
            last = model.last_args(0)  # running state and scratch memory, for layers that have them
            d_last = tuple(cuda.to_device(a) for a in last)
            kernel(layer, "forward_kernel")(p, h, x, out, cache, True, seed, *last)
            kernel(layer, "backward_kernel")(p, h, x, out, cache, go, gi, gp, *last)
            d_out, d_cache, d_gi, d_gp = (cuda.device_array_like(a) for a in (out, cache, gi, gp))
            d_p, d_x, d_go = cuda.to_device(p), cuda.to_device(x), cuda.to_device(go)
            kernel(layer, "cuda_forward")(d_p, h, d_x, d_out, d_cache, True, seed, *d_last)
            kernel(layer, "cuda_backward")(d_p, h, d_x, d_out, d_cache, d_go, d_gi, d_gp, *d_last)
            err = max(rel(d_out.copy_to_host(), out), rel(d_gi.copy_to_host(), gi),
                      rel(d_gp.copy_to_host(), gp) if p.size else 0.0)  # fmt: skip
            rows.append(("layer", entry.name, f"{batch}x{'x'.join(map(str, in_shape))}", err))
    for entry in entries("loss"):
        if not on_gpu("loss", entry, "cuda_kernel"):
            continue
        for batch, k in shapes:
            loss = entry.cls()
            if loss.target == "class" and k < 2:
                continue
            pred = rng.normal(size=(batch, k)).astype(np.float32)
            y = example_targets(loss, batch, k, rng)
            y = y if loss.target == "class" else y.astype(np.float32)
            grad = np.zeros_like(pred)
            value = kernel(loss, "kernel")(pred, y, grad, loss.hyper())
            d_grad, d_out = cuda.device_array_like(grad), cuda.device_array(1, np.float64)
            kernel(loss, "cuda_kernel")(cuda.to_device(pred), cuda.to_device(y), d_grad, loss.hyper(), d_out)
            err = max(rel(d_grad.copy_to_host(), grad), abs(d_out.copy_to_host()[0] - value) / (abs(value) + 1e-12))
            rows.append(("loss", entry.name, f"{batch}x{k}", err))
    for entry in entries("optimizer"):
        if not on_gpu("optimizer", entry, "cuda_kernel"):
            continue
        opt = entry.cls()
        p = rng.normal(size=1001).astype(np.float32)
        state = np.zeros((opt.n_state, p.size), np.float32)
        opt.init_state(state)
        d_p, d_state = cuda.to_device(p), cuda.to_device(state)
        for step in range(1, 6):
            g = rng.normal(size=p.size).astype(np.float32)
            kernel(opt, "kernel")(p, g, state, opt.lr, opt.hyper(), step)
            kernel(opt, "cuda_kernel")(d_p, cuda.to_device(g), d_state, opt.lr, opt.hyper(), step)
        rows.append(("optimizer", entry.name, "1001", rel(d_p.copy_to_host(), p)))
    from jitprop.backends.cuda import scheduled_rate

    out = cuda.device_array(1, np.float64)
    for entry in entries("schedule"):
        if not on_gpu("schedule", entry, "cuda_kernel"):
            continue
        schedule = entry.cls()
        schedule.warmup = 2  # the core's warmup kernel too
        err = max(abs(scheduled_rate(schedule, e, 0.1, out) - schedule(e, 0.1)) / 0.1 for e in range(40))
        rows.append(("schedule", entry.name, "40 epochs", err))
    for entry in entries("transform"):
        if not on_gpu("transform", entry, "cuda_kernel"):
            continue
        transform = entry.cls(**getattr(entry.cls, "example_options", {}))
        if transform.sees_activations:  # the coach's: a model of every activation kind, its memory, its activations
            for n in lengths:
                rows.append(("transform", entry.name, str(n), activation_transform_error(transform, n, rng, rel)))
            continue
        for n in lengths:
            g, p = rng.normal(0, 0.3, n).astype(np.float32), rng.normal(size=n).astype(np.float32)
            offsets = np.array([0, n // 3, n // 3, n], np.int64)  # a layer without parameters between two
            # What setup(model) reads of a model (weight_decay: where the biases lie), for these offsets.
            transform.setup(SimpleNamespace(offsets=offsets, param_ranges=lambda: {
                "0.weight": (0, n // 4), "0.bias": (n // 4, n // 3), "2.weight": (n // 3, n - 5), "2.bias": (n - 5, n)}))
            stats = rng.uniform(size=(3, len(transform.stat_names)))
            d_g, d_p, d_offsets, d_stats = (cuda.to_device(a) for a in (g, p, offsets, stats))
            kernel(transform, "kernel")(g, p, offsets, 0.01, transform.hyper(), stats)
            kernel(transform, "cuda_kernel")(d_g, d_p, d_offsets, 0.01, transform.hyper(), d_stats)
            err = max(rel(d_g.copy_to_host(), g), rel(d_stats.copy_to_host(), stats) if stats.size else 0.0)
            rows.append(("transform", entry.name, str(n), err))
    return rows, skipped


def activation_transform_error(transform, n, rng, rel, batch=33, steps=3):
    """Largest relative difference, over ``steps`` batches, between the CPU and CUDA kernels of a
    transform that sees activations, on a model of about ``n`` parameters."""
    import jitprop
    from numba import cuda

    from jitprop.components import kernel
    from jitprop.kernels import pack_activations

    model = jitprop.Sequential([jitprop.layer("dense", units=17), "relu", jitprop.layer("dense", units=5), "tanh",
                                jitprop.layer("dense", units=3), "sigmoid"], input_dim=max(1, n // 17), seed=0)  # fmt: skip
    transform.setup(model)
    memory = np.zeros(transform.memory_size(model), np.float32)
    transform.init_memory(memory, model)
    stats = np.zeros((len(model.layers), len(transform.stat_names)))
    p = model.params.copy()
    d_p, d_offsets, d_stats, d_memory = (cuda.to_device(a) for a in (p, model.offsets, stats, memory))
    err = 0.0
    for _ in range(steps):
        g = rng.normal(0, 0.3, p.size).astype(np.float32)
        acts = tuple(rng.normal(size=(batch, w)).astype(np.float32) for w in model.dims)
        kernel(transform, "kernel")(g, p, model.offsets, 0.01, transform.hyper(), stats, memory, *pack_activations(acts))
        kernel(transform, "cuda_kernel")(cuda.to_device(g), d_p, d_offsets, 0.01, transform.hyper(), d_stats, d_memory,
                                         tuple(cuda.to_device(a) for a in acts))  # fmt: skip
        err = max(err, rel(d_stats.copy_to_host(), stats), rel(d_memory.copy_to_host(), memory))
        p += rng.normal(0, 0.01, p.size).astype(np.float32)
        d_p.copy_to_device(p)
    return err


def throughput(configs, epochs=3):
    """Samples/s of jitprop on the GPU, and of PyTorch CUDA when available, per configuration."""
    import run as bench

    import jitprop

    results = []
    for name in configs:
        cfg = bench.CONFIGS[name]
        X, y = bench.load_data(cfg["data"])
        weights = bench.initial_weights(cfg["sizes"])
        sizes, batch = cfg["sizes"], cfg["batch"]
        layers = []
        for units in sizes[1:-1]:
            layers += [jitprop.layer("dense", units=units), "relu"]
        layers.append(jitprop.layer("dense", units=sizes[-1]))
        model = jitprop.Sequential(layers, input_dim=sizes[0])
        model.load_state_dict({f"{2 * i}.{k}": v for i, (w, b) in enumerate(weights) for k, v in (("weight", w), ("bias", b))})
        timer = bench.epoch_timer()
        trainer = jitprop.Trainer(model, "cross_entropy", jitprop.optimizer("adam", lr=1e-3), batch_size=batch,
                                  callbacks=[timer], device="cuda")  # fmt: skip
        times = []
        for e in range(epochs + 1):
            trainer.fit(X, y, epochs=e + 1)
            if e:
                times.append(timer.seconds)
        row = {"config": name, "jitprop": len(y) / float(np.median(times)), "loss": trainer.history.history["loss"][-1]}
        try:
            import torch

            if torch.cuda.is_available():
                row["pytorch"] = torch_throughput(torch, sizes, batch, weights, X, y, epochs)
        except ImportError:
            pass
        results.append(row)
    return results


def torch_throughput(torch, sizes, batch, weights, X, y, epochs):
    dev = torch.device("cuda")
    mods = []
    for i in range(len(sizes) - 1):
        mods.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            mods.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*mods).to(dev)
    net.load_state_dict({f"{2 * i}.{k}": torch.from_numpy(v.copy()) for i, (w, b) in enumerate(weights) for k, v in (("weight", w), ("bias", b))})
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xd, yd = torch.from_numpy(X).to(dev), torch.from_numpy(y).to(dev)
    times = []
    for e in range(epochs + 1):
        torch.cuda.synchronize()
        started = time.perf_counter()
        perm = torch.randperm(len(y), device=dev)
        for s in range(0, len(y), batch):
            idx = perm[s : s + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(Xd[idx]), yd[idx]).backward()
            opt.step()
        torch.cuda.synchronize()
        if e:
            times.append(time.perf_counter() - started)
    return len(y) / float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny kernel shapes, no throughput")
    parser.add_argument("--configs", default="S,M,L")
    args = parser.parse_args(argv)
    from numba import cuda

    from jitprop.testing import quick_simulator

    quick_simulator()  # on the simulator only: quicker, and its shared memory race-free

    if not cuda.is_available():
        print("no CUDA GPU is available here (set NUMBA_ENABLE_CUDASIM=1 with --quick to try the simulator)")
        return 1
    name = cuda.get_current_device().name if hasattr(cuda, "get_current_device") else "numba CUDA simulator"
    card = name.decode() if isinstance(name, bytes) else str(name)
    print(f"device: {card}")
    quick = ((1, 3), (7, 5)), (1, 37), ((2, None),)
    rows, skipped = check_kernels(*quick) if args.quick else check_kernels()
    worst = max(r[3] for r in rows)
    for line in skipped:
        print(f"skipped   {line}")
    for kind, name, shape, err in rows:
        print(f"{kind:9s} {name:22s} {shape:12s} max rel. error {err:.2e}  {'ok' if err < 1e-4 else 'FAIL'}")
    print(f"kernels: {len(rows)} checked, worst relative error {worst:.2e}")
    if args.quick:
        return 0 if worst < 1e-4 else 1
    print(f"\n| config | jitprop GPU samples/s | PyTorch CUDA samples/s | ratio | card: {card} |")
    print("|---|---|---|---|---|")
    for row in throughput([c for c in args.configs.split(",") if c]):
        torch_rate = row.get("pytorch")
        ratio = f"{row['jitprop'] / torch_rate:.2f}" if torch_rate else "-"
        print(f"| {row['config']} | {row['jitprop']:,.0f} | {f'{torch_rate:,.0f}' if torch_rate else '-'} | {ratio} | loss {row['loss']:.4f} |")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
