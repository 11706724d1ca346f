"""Cold compile time by depth, and how soon a signal during compilation ends the run (COMPILE.md).

Each run is a whole ``jitprop train --dataset spirals --hidden 4,4,... --epochs 1``
process with an empty cache directory (``JITPROP_CACHE_DIR``, Numba's cache
in it), so it compiles every kernel and the training step, then the same
command again on the warm cache. ``--source DIR`` times another checkout's
``src`` (the release before the step looped over its layers, say) in the
same session. ``--interrupt`` sends SIGINT one second after the model's
summary is printed, while the step compiles, and times the exit.

    python benchmarks/compile_depth.py                          # 10, 25, 50, 200 layers; writes COMPILE.md
    python benchmarks/compile_depth.py --source /tmp/old/src --depths 10,25,50 --no-write
"""

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def command(depth, extra=()):
    hidden = ",".join(["4"] * depth)
    return [sys.executable, "-m", "jitprop", "train", "--dataset", "spirals", "--hidden", hidden, "--epochs", "1", *extra]


def environment(cache, source):
    env = {**os.environ, "JITPROP_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    env.pop("NUMBA_CACHE_DIR", None)
    if source:
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def timed(depth, cache, source, extra=(), limit=1800):
    """Seconds the command took, or None past ``limit``."""
    started = time.perf_counter()
    try:
        subprocess.run(command(depth, extra), env=environment(cache, source), check=True, capture_output=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - started


def interrupted(depth, cache, source):
    """(seconds from SIGINT to exit, exit status, last line on stderr) for a signal during compilation."""
    proc = subprocess.Popen(command(depth), env=environment(cache, source), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    for line in proc.stdout:
        if "parameters (float32" in line:
            break
    time.sleep(1.0)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate()
    return time.perf_counter() - sent, proc.returncode, (err.strip().splitlines() or [""])[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="10,25,50,200", help="hidden layers, comma-separated")
    parser.add_argument("--source", help="a checkout's src directory to time instead of the installed jitprop")
    parser.add_argument("--coach", action="store_true", help="also time --coach (its kernel takes every activation)")
    parser.add_argument("--interrupt", action="store_true", help="also time a Ctrl-C during compilation, at the last depth")
    parser.add_argument("--no-write", action="store_true", help="print only; leave COMPILE.md alone")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for depth in depths:
            variants = [("", ())] + ([("--coach", ("--coach",))] if args.coach else [])
            for label, extra in variants:
                cache = Path(tmp) / f"cache-{depth}{label}"
                cold = timed(depth, cache, args.source, extra)
                warm = timed(depth, cache, args.source, extra) if cold is not None else None
                rows.append((depth, 2 * depth + 1, label, cold, warm))
                print(f"{depth} hidden ({2 * depth + 1} layers) {label}: cold {cold if cold is None else round(cold, 1)} s,"
                      f" warm {warm if warm is None else round(warm, 2)} s", flush=True)  # fmt: skip
        stop = None
        if args.interrupt:
            stop = interrupted(depths[-1], Path(tmp) / "cache-interrupt", args.source)
            print(f"Ctrl-C during compilation at {depths[-1]} hidden: exit {stop[1]} after {stop[0]:.2f} s: {stop[2]}")
    if args.no_write:
        return
    shown = lambda s: "over 30 min" if s is None else f"{s:.1f} s"  # noqa: E731
    lines = [
        "# Compile time by depth",
        "",
        "`python benchmarks/compile_depth.py --coach --interrupt`: `jitprop train --dataset spirals --hidden 4,4,...`"
        " for one epoch, as a whole process, with an empty cache directory (cold: every kernel and the step compile)"
        " and then again (warm).",
        "",
        f"{time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, {os.cpu_count()} cpus.",
        "",
        "| hidden layers | layers | run | cold | warm |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {d} | {n} | {label or 'plain'} | {shown(c)} | {shown(w)} |" for d, n, label, c, w in rows]
    if stop is not None:
        lines += ["", f"Ctrl-C one second after the summary of the {depths[-1]}-hidden-layer model, while its step"
                      f" compiles: exit status {stop[1]} {stop[0]:.2f} s later, saying `{stop[2]}`."]  # fmt: skip
    (HERE / "COMPILE.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'COMPILE.md'}")


if __name__ == "__main__":
    main()
