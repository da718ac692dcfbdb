#!/usr/bin/env python3
"""Claim 3 at equal accuracy: the energy ratio of ZEBRA-like mappings over dense.

Reads accuracy result files of the network efficiency experiments (default:
results/efficiency_resnet*.csv) and, for each energy model and ADC scaling,
takes the cheapest configuration (mapping, parallelism, model variant) of
each family whose mean accuracy over the simulated chips is within
`--within` points of the reference clean accuracy (default: the largest
clean accuracy in the files, the unquantised int8 model's). Prints one
Markdown table: the cheapest dense-family (dense, dense-cal) and
ZEBRA-family (every other mapping) energy per MAC and their ratio.

    python3 experiments/efficiency_verdict.py [CSV ...] [--within 1.0]
"""

import argparse
import csv
import glob
import os

DENSE = {"dense", "dense-cal"}


def rows_of(paths):
    for path in paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                r["file"] = os.path.basename(path)
                yield r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv", nargs="*")
    ap.add_argument("--within", type=float, default=1.0, help="accuracy points below clean allowed")
    args = ap.parse_args()
    paths = args.csv or sorted(glob.glob("results/efficiency_resnet*.csv"))
    paths = [p for p in paths if not p.endswith("_trials.csv")]
    rows = list(rows_of(paths))
    if not rows:
        raise SystemExit("no rows: run the efficiency experiments first (experiments/reproduce.sh)")
    clean = max(float(r["clean_accuracy"]) for r in rows)
    floor = clean - args.within / 100.0
    print(f"reference clean accuracy {100 * clean:.2f}%, floor {100 * floor:.2f}% "
          f"(mean over chips); files: {', '.join(os.path.basename(p) for p in paths)}\n")
    print("| ADC model | scaling | cheapest dense (fJ/MAC) | cheapest ZEBRA-like (fJ/MAC) | ratio |")
    print("|---|---|---|---|---|")
    keys = sorted({(r["energy_model"], r["adc_scaling"]) for r in rows})
    for model, scaling in keys:
        best = {}
        for r in rows:
            if (r["energy_model"], r["adc_scaling"]) != (model, scaling) or not r["energy_fj_per_mac"]:
                continue
            if float(r["mean_accuracy"]) < floor:
                continue
            fam = "dense" if r["mapping"] in DENSE else "zebra"
            e = float(r["energy_fj_per_mac"])
            if fam not in best or e < best[fam][0]:
                best[fam] = (e, f"{r['mapping']}, P = {r['parallelism']}, {r['file']}, "
                                f"{100 * float(r['mean_accuracy']):.2f}%")
        cells = []
        for fam in ("dense", "zebra"):
            cells.append(f"{best[fam][0]:.1f} ({best[fam][1]})" if fam in best else "none within")
        ratio = f"{best['dense'][0] / best['zebra'][0]:.2f}" if len(best) == 2 else "-"
        print(f"| {model} | {scaling} | {cells[0]} | {cells[1]} | {ratio} |")


if __name__ == "__main__":
    main()
