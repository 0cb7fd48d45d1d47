"""The README's rocket table from this folder's rows (`transmodal bench defaults` results, all
on session 13's CPU): rocket_<set>.jsonl (--fit embedder=rocket) and patch_<set>.jsonl (--fit
embedder=patch). A set without a patch file would take session 8's patch rows (the default then,
bench_results/defaults_head/results_batch_probe.jsonl, another CPU). python
bench_results/rocket/table.py"""
import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent
SETS = ["ArrowHead", "GunPoint", "ItalyPowerDemand", "BasicMotions", "OSULeaf"]
DEFAULT = {"ItalyPowerDemand": "patch"}  # 24 steps <= 64 tokens: one step per token keeps patch


def rows(path: Path, name: str) -> list[dict]:
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["set"] == name]


def cell(rs: list[dict]) -> str:
    if not rs:
        return "-"
    xs = [r["test"] for r in sorted(rs, key=lambda r: r["seed"])]
    spread = f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else ""
    return f"{statistics.mean(xs):.3f}{spread} ({' / '.join(f'{x:.3f}' for x in xs)})"


def main() -> None:
    print("| set | `patch` | `rocket` | default now | MiniRocket | s per fit, rocket (median) |")
    print("|---|---|---|---|---|---|")
    means = {"patch": [], "rocket": [], "default": [], "minirocket": []}
    for name in SETS:
        rocket = rows(HERE / f"rocket_{name}.jsonl", name)
        patch = rows(HERE / f"patch_{name}.jsonl", name)
        note = ""
        if not patch:
            patch = rows(HERE.parent / "defaults_head" / "results_batch_probe.jsonl", name)
            note = " (session 8)"
        chosen = DEFAULT.get(name, "rocket")
        default = patch if chosen == "patch" else rocket
        minirocket = statistics.mean(r["minirocket"] for r in rocket)
        for key, rs in (("patch", patch), ("rocket", rocket), ("default", default)):
            means[key].append(statistics.mean(r["test"] for r in rs))
        means["minirocket"].append(minirocket)
        seconds = statistics.median(r["seconds"] for r in rocket)
        print(f"| {name} | {cell(patch)}{note} | {cell(rocket)} | {chosen} | {minirocket:.3f} | {seconds:.0f} |")
    print(f"| mean of 5 | {statistics.mean(means['patch']):.4f} | {statistics.mean(means['rocket']):.4f} "
          f"| **{statistics.mean(means['default']):.4f}** | {statistics.mean(means['minirocket']):.4f} | |")


if __name__ == "__main__":
    main()
