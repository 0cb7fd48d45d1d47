"""Tables of the H200 runs (bench_results/gpu/*.jsonl, written by run_h200.sh and sweep_h200.sh
through `transmodal bench defaults`): python bench_results/gpu/aggregate.py > bench_results/gpu/results.md"""

from __future__ import annotations

import csv
import json
import statistics as st
from pathlib import Path

HERE = Path(__file__).parent
SETS = ["GunPoint", "ArrowHead", "ItalyPowerDemand", "BasicMotions", "OSULeaf"]


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ms(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{st.mean(values):.3f} ± {st.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def per_set(rows: list[dict], key: str, name: str) -> list[float]:
    return [r[key] for r in rows if r["set"] == name and r.get(key) is not None]


def mean_of_sets(rows: list[dict], key: str) -> str:
    means = [st.mean(v) for v in (per_set(rows, key, n) for n in SETS) if v]
    return f"{st.mean(means):.3f}" if len(means) == len(SETS) else f"- ({len(means)} sets)"


def defaults_table(rows: list[dict], auto: list[dict]) -> str:
    out = ["| set | single fit (3 seeds) | 5 fold models, common epoch (transformer alone in auto) | "
           "`--method auto` | MiniRocket | auto kept | s per single fit: all / refine (median) | "
           "s per auto fit (median) | s per refine epoch, single fit (median) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for n in SETS:
        rs, ra = [r for r in rows if r["set"] == n], [r for r in auto if r["set"] == n]
        kept = sorted({r["auto_choice"].split(" (")[0] for r in ra})
        epoch_s = [r["times"]["refine"] / r["epochs_run"] for r in rs]
        out.append(f"| {n} | {ms(per_set(rs, 'test', n))} | {ms(per_set(ra, 'model_alone', n))} | "
                   f"{ms(per_set(ra, 'test', n))} | {ms(per_set(ra, 'minirocket', n))} | {'; '.join(kept)} | "
                   f"{st.median(r['seconds'] for r in rs):.0f} / {st.median(r['times']['refine'] for r in rs):.0f} | "
                   f"{st.median(r['seconds'] for r in ra):.0f} | "
                   f"{st.median(epoch_s):.2f} |")
    out.append(f"| mean of 5 | {mean_of_sets(rows, 'test')} | {mean_of_sets(auto, 'model_alone')} | "
               f"{mean_of_sets(auto, 'test')} | {mean_of_sets(auto, 'minirocket')} | | | | |")
    return "\n".join(out)


def sweep_table(default: list[dict]) -> str:
    out = ["| variant (one option changed) | " + " | ".join(SETS) + " | mean of 5 |",
           "|---|" + "---|" * (len(SETS) + 1)]
    variants = [("default (bf16 on the GPU)", default)]
    variants += [(p.stem, load(p)) for p in sorted((HERE / "sweep").glob("*.jsonl"))]
    for name, rows in variants:
        label = name if name.startswith("default") else " ".join(
            f"`{k}={v}`" for k, v in rows[0]["options"].items())
        cells = []
        for n in SETS:
            v = per_set(rows, "test", n)
            cells.append(f"{ms(v)}" + ("" if len(v) in (0, 3) else f" ({len(v)} seeds)"))
        out.append(f"| {label} | " + " | ".join(cells) + f" | {mean_of_sets(rows, 'test')} |")
    return "\n".join(out)


def gpu_load(path: Path) -> str:
    util, mem = [], []
    for row in csv.reader(path.open()):
        if len(row) < 3 or "%" not in row[1]:
            continue
        util.append(float(row[1].strip(" %")))
        mem.append(float(row[2].strip().split()[0]))
    busy = [u for u in util if u > 0]
    return (f"{path.name}: {len(util)} s sampled, utilisation mean {st.mean(busy):.0f} % while busy "
            f"(max {max(util):.0f} %), memory used at most {max(mem) / 1024:.1f} GiB")


def main() -> None:
    default = load(HERE / "defaults.jsonl")
    auto = load(HERE / "auto.jsonl")
    print("## fit's defaults and --method auto on one H200\n")
    print(defaults_table(default, auto))
    print("\n## One option changed at a time (single fits, 3 seeds; 15 processes on the GPU)\n")
    print(sweep_table(default))
    print("\n## GPU load (nvidia-smi, 1 s samples)\n")
    for p in sorted(HERE.glob("smi_*.csv")):
        print(f"- {gpu_load(p)}")
    print("\n## bf16 autocast vs fp32 train steps (bench precision)\n")
    print((HERE / "precision.md").read_text())


if __name__ == "__main__":
    main()
