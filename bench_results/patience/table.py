"""The README's early-stopping tables from this folder's rows (`transmodal bench defaults`
results, fit's defaults, 1 thread, session 14's CPU, the same kind as session 13's).

- before: `--patience 30` counted epochs since the last *strict* gain (session 13's rows,
  bench_results/rocket/: rocket_<set>.jsonl, and patch_ItalyPowerDemand.jsonl, whose series
  fit the token cap and keep patch tokens);
- now: kept_<set>.jsonl, `--patience 30` counts epochs since the kept epoch (a tie is kept);
- variants on the two sets that stopped inside a plateau: patience0_<set>.jsonl (`--fit
  patience=0`), epochs30_<set>.jsonl (`--fit epochs=30`, the old rule) and scratch_<set>.jsonl
  (`--fit tune=scratch`: a randomly initialised body, the new rule); val10_<set>.jsonl
  (`--fit val_fraction=0.1`, the new rule) on four sets;
- auto_seed0.jsonl: `--fit method=auto`, seed 0, the new rule (not in the tables).

python bench_results/patience/table.py"""
import importlib.util
import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("rocket_table", HERE.parent / "rocket" / "table.py")
rocket_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rocket_table)
cell = rocket_table.cell  # one way to print "mean ± std (seed / seed / seed)" for both tables
SETS = ["ArrowHead", "GunPoint", "ItalyPowerDemand", "BasicMotions", "OSULeaf"]
BEFORE = {"ItalyPowerDemand": "patch"}  # which session-13 file holds the default's rows


def rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return sorted(map(json.loads, path.read_text().splitlines()), key=lambda r: r["seed"])


def epochs(rs: list[dict]) -> str:
    return " / ".join(f"{r['best_epochs'][0]} of {r['epochs_run'][0]}" for r in rs) or "-"


def main() -> None:
    print("| set | before: 30 epochs after the last strict gain | now: 30 epochs after the kept "
          "epoch | kept epoch of epochs run, now | s per fit, now (median) | MiniRocket |")
    print("|---|---|---|---|---|---|")
    means: dict[str, list[float]] = {"before": [], "now": [], "minirocket": []}
    for name in SETS:
        before = rows(HERE.parent / "rocket" / f"{BEFORE.get(name, 'rocket')}_{name}.jsonl")
        now = rows(HERE / f"kept_{name}.jsonl")
        if not now:
            print(f"| {name} | {cell(before)} | - | - | - | - |")
            continue
        minirocket = statistics.mean(r["minirocket"] for r in now)
        means["before"].append(statistics.mean(r["test"] for r in before))
        means["now"].append(statistics.mean(r["test"] for r in now))
        means["minirocket"].append(minirocket)
        seconds = statistics.median(r["seconds"] for r in now)
        print(f"| {name} | {cell(before)} | {cell(now)} | {epochs(now)} | {seconds:.0f} | "
              f"{minirocket:.3f} |")
    n = len(means["now"])
    print(f"| mean of {n} | {statistics.mean(means['before']):.4f} | "
          f"**{statistics.mean(means['now']):.4f}** | | | {statistics.mean(means['minirocket']):.4f} |")
    print()
    print("| set | rule | test accuracy | kept epoch of epochs run | s per fit (median) |")
    print("|---|---|---|---|---|")
    for name in ("GunPoint", "ArrowHead", "ItalyPowerDemand", "BasicMotions"):
        for label, file in (("`--patience 30`, now", f"kept_{name}"),
                            ("`--patience 0` (never stop)", f"patience0_{name}"),
                            ("`--epochs 30` (old rule)", f"epochs30_{name}"),
                            ("`--fit tune=scratch` (a random body), now", f"scratch_{name}"),
                            ("`--fit val_fraction=0.1`, now", f"val10_{name}")):
            rs = rows(HERE / f"{file}.jsonl")
            if rs:
                seconds = statistics.median(r["seconds"] for r in rs)
                print(f"| {name} | {label} | {cell(rs)} | {epochs(rs)} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
