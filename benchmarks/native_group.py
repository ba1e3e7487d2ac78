"""The SGD-momentum update of one weight as numpy chunks (chunks.py) and as a C loop (native.py), interleaved.

Run: python -m benchmarks.native_group [--rounds 30]. Prints the median ms of each at ResNet-18's weight sizes,
on one and two threads, and checks that both give the same bits.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from graphc.backends.numpy import chunks, native

SIZES = {"layer1 conv (64x64x3x3)": 36864, "layer3 conv (256x256x3x3)": 589824,
         "layer4 conv (512x512x3x3)": 2359296}
PROGRAM = [("mul", 0, 0, 3), ("add", 0, 0, 1), ("mul", 5, 0, 4), ("add", 2, 2, 5)]  # buf*mu + g; w + buf*(-lr)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    a = ap.parse_args(argv)
    mu, lr = np.float32(0.9), np.float32(-0.01)
    print("| weight | threads | numpy chunks ms | C loop ms | ratio |\n|---|---|---|---|---|")
    for label, n in SIZES.items():
        rng = np.random.default_rng(0)
        buf, g, w = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
        group = native.Group("float32", [0, 0, 0, 1, 1, 2], PROGRAM, n)
        if not group.ready(wait=True):
            sys.exit(f"no C loop here: {group.status()}")

        def numpy_chunks() -> None:
            def chunk(s: int, e: int) -> None:
                b = np.multiply(buf[s:e], mu, out=buf[s:e])
                b = np.add(b, g[s:e], out=buf[s:e])
                np.add(w[s:e], np.multiply(b, lr), out=w[s:e])
            chunks.run_chunks(chunk, n)

        def c_loop() -> None:
            group(buf, g, w, mu, lr, None)

        check = [x.copy() for x in (buf, g, w)]
        numpy_chunks()
        want = buf.copy(), w.copy()
        buf[...], w[...] = check[0], check[2]
        c_loop()
        assert np.array_equal(buf, want[0]) and np.array_equal(w, want[1]), "the C loop changed a number"
        for threads in (1, 2):
            chunks.state["threads"] = threads
            times: dict[str, list[float]] = {"numpy": [], "c": []}
            for r in range(a.rounds):
                for k, f in (("numpy", numpy_chunks), ("c", c_loop))[:: 1 if r % 2 else -1]:
                    t0 = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t0)
            t_np, t_c = statistics.median(times["numpy"]) * 1e3, statistics.median(times["c"]) * 1e3
            print(f"| {label} | {threads} | {t_np:.3f} | {t_c:.3f} | {t_c / t_np:.2f}x |")
    chunks.state["threads"] = chunks.THREADS


if __name__ == "__main__":
    main()
