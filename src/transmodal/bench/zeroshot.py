"""``transmodal bench zeroshot``: does binding signals to words let the model name classes it
never trained on?

Data: the generated described-signal set (``transmodal.data.described``): 24 classes, each a
combination waveform x speed x envelope named by a sentence; 16 combinations are trained on,
8 are held out while every word is seen. One contrastive fit (``--objective contrastive``,
locked MiniLM text tower) on the 16 seen classes, then, with no further training:

- seen: zero-shot among the 16 seen class names, on new samples of them;
- unseen (among unseen): among the 8 held-out class names only;
- unseen (among all): among all 24 names;
- unseen, paraphrased: among the 8 held-out classes written in other words;
- retrieval: for each held-out class name, the share of its 5 nearest samples that are of it;
- k-shot probe: logistic regression on the frozen target-tower embeddings with k samples per
  held-out class (another draw of the generator), as the CLIP paper's linear probe;
- supervised: a plain classification fit on the 16 seen classes, same budget (seen classes only:
  a supervised head cannot name classes it never had).

Chance is printed beside each. Output: a markdown table (stdout and ``OUT/zeroshot.md``) and
``OUT/zeroshot.json`` with every number and the wall time of each fit.

``--captions``: instead, one contrastive fit on a caption per sample (the captioned variant of
the set: each caption adds the sample's size word, ``make_captioned_signals``), scored by
retrieval recall@1/5/10 both ways among the captions of new samples of the seen combinations
and of the unseen ones, plus zero-shot accuracy over the class names (never trained on as
texts). Output ``OUT/zeroshot_captions.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROWS = [  # key, label, chance
    ("seen", "seen classes (among 16 seen names)", 1 / 16),
    ("unseen", "unseen combinations (among the 8 unseen names)", 1 / 8),
    ("unseen_all", "unseen combinations (among all 24 names)", 1 / 24),
    ("unseen_paraphrase", "unseen, paraphrased names (among 8)", 1 / 8),
    ("retrieval_p5", "retrieval: precision@5 of unseen names (text -> signals)", 1 / 8),
    ("probe_1", "1-shot linear probe on unseen classes", 1 / 8),
    ("probe_4", "4-shot linear probe on unseen classes", 1 / 8),
    ("probe_16", "16-shot linear probe on unseen classes", 1 / 8),
    ("supervised_seen", "supervised head, seen classes (for reference)", 1 / 16),
]


def accuracy(pred: Sequence[Any], true: Sequence[Any]) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(true)))


def evaluate(run: Any, data: Any, pool: Any, seed: int) -> dict[str, float]:
    """Zero-shot, retrieval and probe scores of a fitted contrastive run."""
    from sklearn.linear_model import LogisticRegression

    from transmodal.data.described import label, paraphrase

    all_labels = data.seen_labels + data.unseen_labels
    out = {"seen": accuracy(run.zero_shot(data.x_test, data.seen_labels), data.y_test),
           "unseen": accuracy(run.zero_shot(data.x_unseen, data.unseen_labels), data.y_unseen),
           "unseen_all": accuracy(run.zero_shot(data.x_unseen, all_labels), data.y_unseen)}
    para = {paraphrase(*c): label(*c) for c in data.unseen}
    guess = run.zero_shot(data.x_unseen, list(para), templates=["{}"])
    out["unseen_paraphrase"] = accuracy([para[g] for g in guess], data.y_unseen)
    z = run.embed(data.x_unseen)
    t = run.embed_text(data.unseen_labels)
    top5 = np.argsort(-(z @ t.T), axis=0)[:5]  # (5, K): nearest samples of each name
    out["retrieval_p5"] = float(np.mean([np.mean(data.y_unseen[top5[:, k]] == name)
                                         for k, name in enumerate(data.unseen_labels)]))
    z_pool = run.embed(pool.x_unseen)
    rng = np.random.default_rng(seed)
    for k in (1, 4, 16):
        pick = np.concatenate([rng.permutation(np.flatnonzero(pool.y_unseen == name))[:k]
                               for name in data.unseen_labels])
        probe = LogisticRegression(max_iter=2000, C=10.0).fit(z_pool[pick], pool.y_unseen[pick])
        out[f"probe_{k}"] = accuracy(probe.predict(z), data.y_unseen)
    return out


def run_seed(seed: int, opts: argparse.Namespace) -> dict[str, Any]:
    import transmodal
    from transmodal.data.described import make_described_signals

    data = make_described_signals(n_train=opts.n_train, n_test=opts.n_test, seed=seed)
    pool = make_described_signals(n_train=1, n_test=16, seed=seed + 1000)  # probe training pool
    arrays = {"x_train": data.x_train, "y_train": data.y_train, "x_test": data.x_test,
              "y_test": data.y_test}
    common = dict(body=opts.body, epochs=opts.epochs, max_tokens=opts.max_tokens,
                  batch_size=opts.batch_size, seed=seed, progress=False)
    t0 = time.perf_counter()
    run = transmodal.fit(arrays, objective="contrastive", text_body=opts.text_body, **common)
    t_contrastive = time.perf_counter() - t0
    scores = evaluate(run, data, pool, seed)
    t0 = time.perf_counter()
    supervised = transmodal.fit(arrays, **common)
    t_supervised = time.perf_counter() - t0
    scores["supervised_seen"] = supervised.summary["metrics"]["test"]["accuracy"]
    return {"seed": seed, "scores": scores, "seconds": {"contrastive_fit": t_contrastive,
                                                         "supervised_fit": t_supervised},
            "best_epoch": run.summary["best_epoch"]}


def run_captions(seed: int, opts: argparse.Namespace) -> dict[str, Any]:
    """One contrastive fit on the captioned set; retrieval and zero-shot scores."""
    import transmodal
    from transmodal.data.described import make_captioned_signals

    data = make_captioned_signals(n_train=opts.n_train, n_test=opts.n_test, seed=seed)
    arrays = {"x_train": data.x_train, "text_train": data.text_train, "y_train": data.y_train,
              "x_test": data.x_test, "text_test": data.text_test, "y_test": data.y_test}
    t0 = time.perf_counter()
    run = transmodal.fit(arrays, objective="contrastive", body=opts.body, text_body=opts.text_body,
                         epochs=opts.epochs, max_tokens=opts.max_tokens, batch_size=opts.batch_size,
                         seed=seed, progress=False)
    seconds = time.perf_counter() - t0
    return {"seed": seed, "seconds": seconds, "best_epoch": run.summary["best_epoch"],
            "distinct": {"train": len(set(data.text_train)), "test": len(set(data.text_test)),
                         "unseen": len(set(data.text_unseen))},
            "seen": run.summary["metrics"]["test"],
            "unseen": run.evaluate(data.x_unseen, data.text_unseen),
            "zero_shot": {"seen": accuracy(run.zero_shot(data.x_test, data.seen_labels), data.y_test),
                          "unseen": accuracy(run.zero_shot(data.x_unseen, data.unseen_labels),
                                             data.y_unseen)}}


def render_captions(results: list[dict[str, Any]], opts: argparse.Namespace) -> str:
    r0 = results[0]
    lines = [f"Captioned described signals (a size word per sample: {r0['distinct']['train']} distinct "
             f"training captions, {opts.n_train} samples per seen class); body {opts.body}, locked "
             f"{opts.text_body} text tower, {opts.epochs} epochs; {len(results)} seed(s), mean. "
             "Recall among the split's own distinct captions; chance of sample -> text recall@k "
             "is k / (distinct captions).", "",
             "| split | direction | recall@1 | recall@5 | recall@10 | chance @1 / @5 / @10 |",
             "|---|---|---|---|---|---|"]
    for split, name in (("seen", "seen combinations, new samples"), ("unseen", "unseen combinations")):
        n = r0["distinct"]["test" if split == "seen" else "unseen"]
        chance = " / ".join(f"{min(1.0, k / n):.3f}" for k in (1, 5, 10))
        for way, text in (("sample_to_text", "sample -> caption"), ("text_to_sample", "caption -> sample")):
            vals = [statistics.mean(r[split][f"{way}_recall_at_{k}"] for r in results) for k in (1, 5, 10)]
            lines.append(f"| {name} ({n} captions) | {text} | " + " | ".join(f"{v:.3f}" for v in vals)
                         + f" | {chance} |")
    zs = {k: statistics.mean(r["zero_shot"][k] for r in results) for k in ("seen", "unseen")}
    lines += ["", f"Zero-shot over class names (no size word; never trained on as texts): seen "
                  f"{zs['seen']:.3f} among 16 (chance 0.062), unseen {zs['unseen']:.3f} among 8 "
                  "(chance 0.125).",
              f"Wall time per fit: {statistics.mean(r['seconds'] for r in results):.0f} s; best "
              f"epoch {', '.join(str(r['best_epoch']) for r in results)} (on validation recall@1)."]
    return "\n".join(lines)


def run_basic_motions(opts: argparse.Namespace) -> list[dict[str, Any]]:
    """A real bundled set with class names in words (BasicMotions: badminton, running,
    standing, walking; 6-channel accelerometer and gyroscope, 40 train / 40 test): leave one
    class out of training, then name its test samples among all four words (chance 0.25)."""
    import transmodal
    from transmodal.data import load_dataset

    ds = load_dataset("ucr:BasicMotions")
    names = sorted(set(ds.y_train.tolist()))
    rows = []
    for held in names:
        keep = ds.y_train != held
        t0 = time.perf_counter()
        run = transmodal.fit((ds.x_train[keep], ds.y_train[keep]), objective="contrastive",
                             body=opts.body, text_body=opts.text_body, epochs=opts.epochs,
                             max_tokens=opts.max_tokens, batch_size=opts.batch_size, seed=0,
                             progress=False)
        seconds = time.perf_counter() - t0
        unseen = ds.y_test == held
        seen_names = [n for n in names if n != held]
        rows.append({"held_out": held, "seconds": seconds,
                     "unseen_among_all": accuracy(run.zero_shot(ds.x_test[unseen], names), ds.y_test[unseen]),
                     "seen_among_seen": accuracy(run.zero_shot(ds.x_test[~unseen], seen_names),
                                                 ds.y_test[~unseen])})
    return rows


def render_basic_motions(rows: list[dict[str, Any]]) -> str:
    lines = ["BasicMotions, one class held out of training at a time (zero-shot among all 4 "
             "names, chance 0.25; seen classes among their 3 names, chance 0.333):", "",
             "| held-out class | held-out accuracy | seen accuracy | fit s |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['held_out']} | {r['unseen_among_all']:.3f} | {r['seen_among_seen']:.3f} "
                     f"| {r['seconds']:.0f} |")
    mean = statistics.mean(r["unseen_among_all"] for r in rows)
    lines.append(f"| mean | {mean:.3f} | {statistics.mean(r['seen_among_seen'] for r in rows):.3f} | |")
    return "\n".join(lines)


def render(results: list[dict[str, Any]], opts: argparse.Namespace) -> str:
    lines = [f"Generated described signals (16 seen / 8 unseen combinations, {opts.n_train} "
             f"training samples per seen class); body {opts.body}, locked {opts.text_body} text "
             f"tower, {opts.epochs} epochs, max {opts.max_tokens} tokens; "
             f"{len(results)} seed(s), mean ± std.", "",
             "| measure | accuracy | chance |", "|---|---|---|"]
    for key, text, chance in ROWS:
        vals = [r["scores"][key] for r in results]
        sd = f" ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else ""
        lines.append(f"| {text} | {statistics.mean(vals):.3f}{sd} | {chance:.3f} |")
    fit_s = [r["seconds"]["contrastive_fit"] for r in results]
    sup_s = [r["seconds"]["supervised_fit"] for r in results]
    lines += ["", f"Wall time per fit: contrastive {statistics.mean(fit_s):.0f} s, supervised "
                  f"{statistics.mean(sup_s):.0f} s (this machine, threads as set)."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="transmodal bench zeroshot", description=__doc__.split("\n\n")[0])
    p.add_argument("--body", default="minilm")
    p.add_argument("--text-body", default="minilm")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--n-train", type=int, default=20, help="training samples per seen class")
    p.add_argument("--n-test", type=int, default=10, help="test samples per class")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--out-dir", default="bench_results")
    p.add_argument("--real", action="store_true", help="also BasicMotions, one class held out at a "
                   "time (4 more fits)")
    p.add_argument("--quick", action="store_true", help="2 epochs, 4 samples per class: a smoke run")
    p.add_argument("--captions", action="store_true", help="only the caption-per-sample bench: "
                   "retrieval recall@1/5/10 both ways (OUT/zeroshot_captions.md)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    if opts.quick:
        opts.epochs, opts.n_train, opts.n_test = 2, 4, 4
    out = Path(opts.out_dir)
    if opts.captions:
        results = [run_captions(seed, opts) for seed in range(opts.seeds)]
        table = render_captions(results, opts)
        print(table)
        out.mkdir(parents=True, exist_ok=True)
        (out / "zeroshot_captions.md").write_text(table + "\n")
        (out / "zeroshot_captions.json").write_text(json.dumps({"options": vars(opts),
                                                                "results": results}, indent=1))
        return 0
    results = [run_seed(seed, opts) for seed in range(opts.seeds)]
    table = render(results, opts)
    real = run_basic_motions(opts) if opts.real else []
    if real:
        table += "\n\n" + render_basic_motions(real)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "zeroshot.md").write_text(table + "\n")
    (out / "zeroshot.json").write_text(json.dumps({"options": vars(opts), "results": results,
                                                   "basic_motions": real}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
