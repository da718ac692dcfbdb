#!/usr/bin/env python3
"""The two benchmark workloads of `zebra bench` in plain NumPy.

Workload S: K = N = 256, 8-bit weights and inputs, dense two's-complement
mapping, P = 128, 6-bit full-scale ADC, 5% static cell mismatch, 64 input
vectors per trial. Per trial it draws the noisy conductances once and runs
one BLAS matmul per chunk: the fastest honest NumPy formulation.

Workload D: the same layer with one input vector per trial and dynamic
(per-read) cell noise, drawn per cell for the rows whose input bit is 1.

It prints cell-MACs/s (median over repeats) and the RMSE of the output
error, then, with --zebra PATH, runs `zebra run` on the same weights and
inputs (saved as .npy) and prints its RMSE beside NumPy's: the two use
different random streams, so they agree within Monte Carlo error.

    python3 experiments/baselines/numpy_reference.py --zebra target/release/zebra
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

K = N = 256
BW = BX = 8
P = 128
ADC_BITS = 6
SIGMA = 0.05


def make_layer(rng, inputs):
    w = rng.standard_normal((K, N))
    w = np.round(w / np.abs(w).max(axis=0) * 127).astype(np.int32)
    x = np.abs(rng.standard_normal((inputs, K)))
    x[rng.random((inputs, K)) < 0.5] = 0.0
    x = np.round(x / x.max() * 255).astype(np.int32)
    return w, x


def planes(w):
    """Two's-complement bit planes, [K, J*N] float32 (plane-major columns), and scales."""
    u = w & 0xFF
    d = np.stack([(u >> j) & 1 for j in range(BW)], axis=0)  # [J, K, N]
    scales = np.array([2.0**j for j in range(BW - 1)] + [-(2.0 ** (BW - 1))])
    return d.transpose(1, 0, 2).reshape(K, BW * N).astype(np.float32), scales


def adc(a):
    top = 2**ADC_BITS - 1
    step = max(1.0, P / top)
    code = np.clip(np.round(a / step), 0, top)  # np.round rounds half to even
    return code * step


def shift_add(values, scales):
    """values [B, BX, J*N] -> y [B, N]."""
    v = values.reshape(values.shape[0], BX, BW, N)
    return np.einsum("bijn,i,j->bn", v, 2.0 ** np.arange(BX), scales)


def workload_s(w, x, trials, rng):
    d, scales = planes(w)
    xb = np.stack([(x >> i) & 1 for i in range(BX)], axis=1).astype(np.float32)  # [B, BX, K]
    b = x.shape[0]
    xrows = xb.reshape(b * BX, K)
    exact = x.astype(np.int64) @ w.astype(np.int64)
    sq = 0.0
    start = time.perf_counter()
    for _ in range(trials):
        g = d * (1.0 + SIGMA * rng.standard_normal(d.shape, dtype=np.float32))
        values = np.zeros((b * BX, BW * N), dtype=np.float32)
        for c in range(0, K, P):
            values += adc(xrows[:, c : c + P] @ g[c : c + P])
        y = shift_add(values.reshape(b, BX, BW * N), scales)
        sq += ((y - exact) ** 2).sum()
    secs = time.perf_counter() - start
    return trials * b * K * N * BX * BW / secs, np.sqrt(sq / (trials * b * N))


def workload_d(w, x, trials, rng):
    d, scales = planes(w)
    x0 = x[0]
    exact = x0.astype(np.int64) @ w.astype(np.int64)
    sq = 0.0
    start = time.perf_counter()
    for _ in range(trials):
        values = np.zeros((BX, BW * N), dtype=np.float32)
        for i in range(BX):
            for c in range(0, K, P):
                rows = np.nonzero((x0[c : c + P] >> i) & 1)[0] + c
                if rows.size:
                    dc = d[rows]
                    a = (dc * (1.0 + SIGMA * rng.standard_normal(dc.shape, dtype=np.float32))).sum(axis=0)
                else:
                    a = np.zeros(BW * N, dtype=np.float32)
                values[i] += adc(a)
        y = shift_add(values[None], scales)[0]
        sq += ((y - exact) ** 2).sum()
    secs = time.perf_counter() - start
    return trials * K * N * BX * BW / secs, np.sqrt(sq / (trials * N))


def zebra_rmse(zebra, w, x, mode, trials, sampling):
    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "w.npy"), w.astype(np.int8))
        np.save(os.path.join(tmp, "x.npy"), x.astype(np.uint8))
        exp = os.path.join(tmp, "ref.toml")
        with open(exp, "w") as f:
            f.write(
                f'version = 1\ntrials = {trials}\nseed = 7\nmappings = ["dense"]\n'
                f'[layer]\nweights_file = "w.npy"\ninputs_file = "x.npy"\n'
                f"[array]\nparallelism = {P}\n[adc]\nbits = {ADC_BITS}\n"
                f'[noise]\ncell_sigma = {SIGMA}\nmode = "{mode}"\nsampling = "{sampling}"\n'
            )
        out = os.path.join(tmp, "out")
        subprocess.run([zebra, "run", exp, "--out", out, "--quiet", "--engine", "cpu"], check=True, capture_output=True)
        import csv

        with open(os.path.join(out, "ref.csv")) as f:
            row = next(csv.DictReader(f))
        return float(row["rmse"]), float(row["cell_macs_per_s"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["S", "D", "both"], default="both")
    ap.add_argument("--trials", type=int, default=None, help="trials per repeat (default 200 for S, 300 for D)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--zebra", help="path to the zebra binary, to cross-check the RMSE")
    args = ap.parse_args()
    rng = np.random.default_rng(2024)
    for wl in ["S", "D"] if args.workload == "both" else [args.workload]:
        trials = args.trials or (200 if wl == "S" else 300)
        w, x = make_layer(rng, 64 if wl == "S" else 1)
        fn = workload_s if wl == "S" else workload_d
        runs = [fn(w, x, trials, rng) for _ in range(args.repeats)]
        rate = float(np.median([r[0] for r in runs]))
        rmse = float(np.mean([r[1] for r in runs]))
        print(f"numpy {wl} {'static per-cell' if wl == 'S' else 'dynamic per-cell'}  RMSE {rmse:.4e}  median {rate:.2e} cell-MACs/s")
        sys.stdout.flush()
        if args.zebra:
            mode, sampling = ("static", "auto") if wl == "S" else ("dynamic", "per-cell")
            z_rmse, z_rate = zebra_rmse(args.zebra, w, x, mode, 1000, sampling)
            print(f"zebra {wl} same layer, 1000 trials  RMSE {z_rmse:.4e}  (NumPy/zebra RMSE ratio {rmse / z_rmse:.4f})")


if __name__ == "__main__":
    main()
