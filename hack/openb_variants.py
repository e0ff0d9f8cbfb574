#!/usr/bin/env python3
"""Build stand-ins for the openb workload variants that are not shipped here.

The trace README keeps some variants back (gpushare60/100, multigpu30/50,
gpuspec20/33, cpu100/250) to check results on data nobody tuned to. This
script derives look-alikes from openb_pod_list_default.csv, changing one
property the way the shipped variants do, so that a policy can be checked
beyond the nine visible workloads (sim/README.md has the figures):

  multigpuNN  default plus copies of its multi-GPU pods, until multi-GPU
              pods ask for NN% of the GPU (multigpu20/40 add pods likewise)
  cpuNNN      default's GPU pods plus CPU-only pods making NNN/10 % of all
              pods (cpu050/200 keep the GPU pods likewise)
  gpuspecNN   default with NN% of its GPU pods limited to models drawn from
              the limits that gpuspec25 uses
  gpushare100 default with every whole-card one-GPU pod turned into a shared
              pod drawn from default's shared pods

They are stand-ins, not the held-back files: same idea, other draws.

Usage: hack/openb_variants.py TRACE_DIR OUT_DIR [--seed N]
"""

import argparse
import csv
import os
import random

COLUMNS = ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec"]


def load(trace, workload):
    with open(os.path.join(trace, f"openb_pod_list_{workload}.csv"), newline="") as f:
        return list(csv.DictReader(f))


def save(out, workload, rows):
    with open(os.path.join(out, f"openb_pod_list_{workload}.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in COLUMNS})


def gpu(r):
    return int(r["num_gpu"]) * int(r["gpu_milli"])


def copy(r, name):
    r = dict(r)
    r["name"] = name
    return r


def multigpu(base, share, rng):
    multi = [r for r in base if int(r["num_gpu"]) > 1]
    rows = list(base)
    total = sum(gpu(r) for r in rows)
    asked = sum(gpu(r) for r in multi)
    while asked < share * total:
        r = copy(rng.choice(multi), f"openb-pod-m{len(rows):05d}")
        rows.append(r)
        total += gpu(r)
        asked += gpu(r)
    return rows


def cpu(base, share, rng):
    cpu_pods = [r for r in base if int(r["num_gpu"]) == 0]
    rows = [r for r in base if int(r["num_gpu"]) > 0]
    want = round(share * len(rows) / (1 - share))
    if want <= len(cpu_pods):
        picked = rng.sample(cpu_pods, want)
    else:
        picked = cpu_pods + [copy(rng.choice(cpu_pods), f"openb-pod-c{i:05d}") for i in range(want - len(cpu_pods))]
    return rows + picked


def gpuspec(base, share, specs, rng):
    rows = [dict(r) for r in base]
    gpu_pods = [r for r in rows if int(r["num_gpu"]) > 0]
    for r in rng.sample(gpu_pods, round(share * len(gpu_pods))):
        r["gpu_spec"] = rng.choice(specs)
    return rows


def gpushare_all(base, rng):
    shared = [r for r in base if int(r["num_gpu"]) == 1 and int(r["gpu_milli"]) < 1000]
    rows = []
    for r in base:
        r = dict(r)
        if int(r["num_gpu"]) == 1 and int(r["gpu_milli"]) == 1000:
            s = rng.choice(shared)
            for c in ("cpu_milli", "memory_mib", "gpu_milli"):
                r[c] = s[c]
        rows.append(r)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace", help="folder with openb_pod_list_default.csv and openb_pod_list_gpuspec25.csv")
    p.add_argument("out", help="folder to write the variants to")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    base = load(a.trace, "default")
    specs = [r["gpu_spec"] for r in load(a.trace, "gpuspec25") if r["gpu_spec"]]
    rng = random.Random(a.seed)
    save(a.out, "multigpu30", multigpu(base, 0.30, rng))
    save(a.out, "multigpu50", multigpu(base, 0.50, rng))
    save(a.out, "cpu100", cpu(base, 0.10, rng))
    save(a.out, "cpu250", cpu(base, 0.25, rng))
    save(a.out, "gpuspec20", gpuspec(base, 0.20, specs, rng))
    save(a.out, "gpuspec33", gpuspec(base, 0.33, specs, rng))
    save(a.out, "gpushare100", gpushare_all(base, rng))


if __name__ == "__main__":
    main()
