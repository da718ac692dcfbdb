#!/usr/bin/env python3
"""Claim 3 at equal accuracy: the energy ratio of ZEBRA-like mappings over dense.

Reads accuracy result files of the network efficiency experiments (default:
results/efficiency_resnet*.csv) and, for each energy model and ADC scaling,
takes the cheapest configuration (mapping, parallelism, model variant) of
each family whose mean accuracy over the simulated chips is within
`--within` points of the reference clean accuracy (default: the largest
clean accuracy in the files, the unquantised int8 model's). Prints one
Markdown table: the cheapest of each family (dense: dense, dense-cal;
ZEBRA: zebra, csd; term slots: the term-slots mappings) within the
accuracy floor, and the ratios of dense's energy per MAC to the others'.

    python3 experiments/efficiency_verdict.py [CSV ...] [--within 1.0]
"""

import argparse
import csv
import glob
import os

FAMILIES = ("dense", "zebra", "term slots")


def family(mapping):
    if mapping in ("dense", "dense-cal"):
        return "dense"
    return "term slots" if mapping.startswith("term-slots") else "zebra"


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
    print("| ADC model | scaling | " + " | ".join(f"cheapest {f} (fJ/MAC)" for f in FAMILIES)
          + " | dense / zebra | dense / term slots |")
    print("|---|---|---|---|---|---|---|")
    keys = sorted({(r["energy_model"], r["adc_scaling"]) for r in rows})
    for model, scaling in keys:
        best = {}
        for r in rows:
            if (r["energy_model"], r["adc_scaling"]) != (model, scaling) or not r["energy_fj_per_mac"]:
                continue
            if float(r["mean_accuracy"]) < floor:
                continue
            fam = family(r["mapping"])
            e = float(r["energy_fj_per_mac"])
            if fam not in best or e < best[fam][0]:
                best[fam] = (e, f"{r['mapping']}, P = {r['parallelism']}, "
                                f"{r['file'].removesuffix('.csv')}, {100 * float(r['mean_accuracy']):.2f}%")
        cells = [f"{best[f][0]:.1f} ({best[f][1]})" if f in best else "none within" for f in FAMILIES]
        ratios = [f"{best['dense'][0] / best[f][0]:.2f}" if "dense" in best and f in best else "-"
                  for f in FAMILIES[1:]]
        print(f"| {model} | {scaling} | " + " | ".join(cells + ratios) + " |")


if __name__ == "__main__":
    main()
