"""The run report: one self-contained HTML page, ``RUN/report/index.html``.

Figures are inline base64 PNGs (matplotlib), the page needs no network and no JavaScript.
Sections: the task and data, the command to reproduce (from config.yaml), the scores (and the
baselines beside them when summary.json has them), the learning curves with the chosen epoch,
predictions against targets on the test split (else the validation split, carved exactly as
``fit`` carved it; or the data given with ``--data``), the alignment plots, and the resolved
configuration. Every string from the user (data names, labels, options) is HTML-escaped.
The page is written to a temporary file and renamed, so a failure never leaves half a page.
"""

from __future__ import annotations

import base64
import html
import io
import os
import shlex
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..run.folder import RunFolder
from .plots import plot_learning_curves, pyplot

IN_MEMORY = ("arrays", "data")  # the data names config.yaml records for in-memory arrays


def write_report(run_dir: str | Path, data: Any = None, *, run: Any = None,
                 label_column: str | None = None, fitted_on: Any = None) -> Path:
    """Write ``RUN/report/index.html`` and return its path.

    ``data``: other data to predict on for the prediction plots (a spec string, ``(x, y)`` or
    a Dataset): its test split, else all of it. Default: the data the run was fitted on
    (``fitted_on``, which ``fit`` passes, or else the data recorded in config.yaml): its test
    split, else the validation split. ``run``: the fitted Run (default: loaded from RUN).
    """
    import yaml

    folder = RunFolder(Path(run_dir))
    summary = folder.read_summary()  # unfinished or not a run folder: one clear error
    config = yaml.safe_load((folder.path / "config.yaml").read_text()) or {}
    if run is None:
        from ..run import load

        run = load(folder.path)
    if hasattr(run, "task_run"):  # several tasks: their scores are in summary.json
        raise ConfigError("the HTML report covers runs of one task; a run fitted on several tasks "
                          "has its per-task scores in summary.json (report not built for it yet)")
    split, y_true, y_pred = _predictions(run, config, data, label_column, fitted_on)
    curves = folder.report_dir / "learning_curves.png"
    if not curves.exists():  # e.g. a run folder written before reports existed
        plot_learning_curves(folder.read_metrics(), run.preprocessor.target.primary[0], curves,
                             summary.get("best_epoch"))
    parts = [
        _section("Task and data", _task_table(summary, config, run)),
        _section("Reproduce", _reproduce(folder.path, config, run.preprocessor.input_shape[1:])),
        _section("Scores", _scores(summary)),
        _section("Learning curves", _file_img(curves, "learning curves")
                 + f"<p>Chosen epoch (best validation {html.escape(str(run.preprocessor.target.primary[0]))}): "
                 f"{html.escape(str(summary.get('best_epoch')))} of {html.escape(str(summary.get('epochs_run')))}.</p>"),
        _section(f"Predictions on the {html.escape(split)}", _prediction_parts(run, y_true, y_pred)),
    ]
    align = [p for p in ("align_distance.png", "align_embedding.png") if (folder.report_dir / p).exists()]
    if align:
        parts.append(_section("Alignment", "".join(_file_img(folder.report_dir / p, p) for p in align)))
    parts.append(_section("Configuration (config.yaml)",
                          f"<pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>"))
    title = f"transmodal run: {summary.get('data', '')} ({summary.get('task', '')})"
    page = _PAGE.format(title=html.escape(title), body="\n".join(parts),
                        stamp=html.escape(time.strftime("%Y-%m-%d %H:%M:%S")),
                        run=html.escape(str(folder.path)))
    out = folder.report_dir / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# ----------------------------------------------------------------------------- predictions
def _predictions(run: Any, config: dict[str, Any], data: Any, label_column: str | None,
                 fitted_on: Any) -> tuple[str, np.ndarray, np.ndarray]:
    from ..data import load_dataset, split_train_val

    label_column = label_column or config.get("label_column", "label")
    target = run.preprocessor.target
    texts = target.view == "retrieval"  # a caption per sample: the captions are the targets

    def text_column(spec: Any) -> str | None:
        return config.get("text_column") if str(spec).endswith(".csv") else None

    if data is not None:
        ds = load_dataset(data, label_column=label_column, text_column=text_column(data))
        y_train, y_test = (ds.text_train, ds.text_test) if texts else (ds.y_train, ds.y_test)
        if ds.x_test is not None:
            x, y, split = ds.x_test, y_test, "test split of the data given"
        else:
            x, y, split = ds.x_train, y_train, "data given"
    else:
        name = str(config.get("data"))
        if fitted_on is None and name in IN_MEMORY and not Path(name).exists():
            raise DataError("the run was fitted on in-memory arrays, so the report has no data to "
                            "predict on: pass the data (transmodal report RUN --data x.npz, or "
                            "write_report(RUN, data=(x, y)))")
        ds = fitted_on if fitted_on is not None else load_dataset(
            name, config.get("test_data"), label_column, text_column=text_column(name))
        y_train, y_test = (ds.text_train, ds.text_test) if texts else (ds.y_train, ds.y_test)
        if ds.x_test is not None:
            x, y, split = ds.x_test, y_test, "test split"
        else:  # the validation split, carved as fit carved it (same function, seed and fraction)
            _, va = split_train_val(y_train, target, float(config.get("val_fraction", 0.2)),
                                    int(config.get("seed", 0)))
            x, y, split = ds.x_train[va], y_train[va], "validation split"
    if y is None:
        raise DataError("these data have no captions to score the run's retrieval on; give data "
                        "with text_train/text_test (or the --text-column)")
    target.check_eval_targets(x, y)  # labels the model never saw: one clear error
    if texts:  # the closest of the split's own captions
        return split, y, run.zero_shot(x, np.unique(y).tolist(), templates="{}")
    return split, y, run.predict(x)


def _prediction_parts(run: Any, y_true: np.ndarray, y_pred: np.ndarray) -> str:
    """The task's view of predictions against targets (classes, values or fields)."""
    scores = run.preprocessor.target.score(y_true, y_pred)
    text = f"<p>{len(y_true)} samples: {html.escape(_fmt_scores(scores))}</p>"
    view = run.preprocessor.target.view  # the task says how its predictions are shown
    if view == "classes":
        return text + _classification(run.classes, y_true, y_pred)
    if view == "retrieval":  # captions: a few samples' own and closest captions
        rows = [[str(i), str(t), str(p)] for i, (t, p) in enumerate(zip(y_true[:10], y_pred[:10]))]
        return text + _table(["sample", "its caption", "closest caption of the split"], rows)
    if y_true.ndim >= 2 and list(y_true.shape[1:]) != list(y_pred.shape[1:]):
        raise DataError(f"targets {y_true.shape[1:]} and predictions {y_pred.shape[1:]} differ in shape")
    if view == "fields":
        images = len(run.preprocessor.input_shape) == 3  # (C, H, W): fields, else series
        return text + _img(_dense_figure(y_true, y_pred, images), "predictions against targets")
    return text + _img(_parity_figure(y_true, y_pred), "parity and residuals")


def _classification(classes: list[Any], y_true: np.ndarray, y_pred: np.ndarray) -> str:
    from sklearn.metrics import classification_report, confusion_matrix

    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    plt = pyplot()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(min(3 + 0.45 * k, 12), min(2.6 + 0.45 * k, 11)))
    im = ax.imshow(matrix, cmap="Blues")
    names = [str(c) for c in classes]
    ax.set_xticks(range(k), names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), names)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()  # long class names stay inside the figure
    report = classification_report(y_true, y_pred, labels=classes, output_dict=True, zero_division=0)
    rows = [[str(c), *(f"{report[str(c)][m]:.3f}" for m in ("precision", "recall", "f1-score")),
             str(int(report[str(c)]["support"]))] for c in classes if str(c) in report]
    for avg in ("macro avg", "weighted avg"):
        if avg in report:
            rows.append([avg, *(f"{report[avg][m]:.3f}" for m in ("precision", "recall", "f1-score")),
                         str(int(report[avg]["support"]))])
    return _img(fig, "confusion matrix") + _table(["class", "precision", "recall", "f1", "support"], rows)


def _parity_figure(y_true: np.ndarray, y_pred: np.ndarray):
    t = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for j in range(t.shape[1]):
        label = f"output {j}" if t.shape[1] > 1 else None
        ax1.scatter(t[:, j], p[:, j], s=10, alpha=0.7, label=label)
        ax2.scatter(t[:, j], p[:, j] - t[:, j], s=10, alpha=0.7, label=label)
    low, high = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    ax1.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="y = x")
    ax1.set_xlabel("target")
    ax1.set_ylabel("prediction")
    ax1.set_title("parity")
    ax1.legend(fontsize=8)
    ax2.axhline(0, color="grey", linestyle="--", linewidth=1)
    ax2.set_xlabel("target")
    ax2.set_ylabel("prediction - target")
    ax2.set_title("residuals")
    fig.tight_layout()
    return fig


def _dense_figure(y_true: np.ndarray, y_pred: np.ndarray, images: bool, n: int = 3):
    """Up to ``n`` samples: series as lines, 2-D fields as target | prediction | error images
    (the first target channel)."""
    plt = pyplot()
    n = min(n, len(y_true))
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if images:  # (N, H, W) or (N, K, H, W)
        fields_t = t.reshape(len(t), -1, *t.shape[-2:])[:, 0]
        fields_p = p.reshape(len(p), -1, *p.shape[-2:])[:, 0]
        fig, axes = plt.subplots(n, 3, figsize=(10, 3 * n), squeeze=False)
        for i in range(n):
            vmin, vmax = fields_t[i].min(), fields_t[i].max()
            for ax, img, name in zip(axes[i], (fields_t[i], fields_p[i], fields_p[i] - fields_t[i]),
                                     ("target", "prediction", "error")):
                im = ax.imshow(img, cmap="viridis" if name != "error" else "coolwarm",
                               **({"vmin": vmin, "vmax": vmax} if name != "error" else {}))
                ax.set_title(f"sample {i}: {name}", fontsize=9)
                ax.axis("off")
                fig.colorbar(im, ax=ax, fraction=0.046)
    else:  # (N, L) or (N, K, L): one line pair per sample
        series_t = t.reshape(len(t), -1, t.shape[-1])[:, 0]
        series_p = p.reshape(len(p), -1, p.shape[-1])[:, 0]
        fig, axes = plt.subplots(n, 1, figsize=(10, 2.4 * n), squeeze=False)
        for i in range(n):
            ax = axes[i, 0]
            ax.plot(series_t[i], label="target", color="C0")
            ax.plot(series_p[i], label="prediction", color="C1", linestyle="--")
            ax.set_title(f"sample {i}", fontsize=9)
            ax.legend(fontsize=8)
        axes[-1, 0].set_xlabel("position")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- sections
def _task_table(summary: dict[str, Any], config: dict[str, Any], run: Any) -> str:
    keys = [("task", "task"), ("data", "data"), ("test data", None), ("body", "body"),
            ("align", "align"), ("tune", "tune"), ("training samples", "n_train"),
            ("validation samples", "n_val"), ("test samples", "n_test"),
            ("trainable parameters", "trainable_params"), ("parameters", "total_params"),
            ("device", "device"), ("precision", "precision"), ("peak memory (MB)", "peak_rss_mb")]
    rows = []
    for label, key in keys:
        value = config.get("test_data") if key is None else summary.get(key)
        if value is not None:
            rows.append([label, f"{value:,.0f}" if isinstance(value, (int, float)) and key != "data" else str(value)])
    rows.append(["input shape (C, ...)", str(tuple(run.preprocessor.input_shape))])
    for key in ("tokens", "patch", "image_size"):
        if key in summary:
            rows.append([key, str(summary[key])])
    if run.classes:
        shown = ", ".join(map(str, run.classes[:30])) + (" ..." if len(run.classes) > 30 else "")
        rows.append([f"classes ({len(run.classes)})", shown])
    times = summary.get("times") or {}
    if times:
        rows.append(["time (s)", ", ".join(f"{k} {v:.1f}" for k, v in times.items())])
    if summary.get("sample_weight"):
        rows.append(["sample weights", str(summary["sample_weight"])])
    return _table(["", ""], rows, show_header=False)


def reproduce_command(run_dir: Path, config: dict[str, Any],
                      spatial: Sequence[int] | None = None) -> list[str]:
    """The command lines that re-run this fit, from config.yaml: the explicit options that
    differ from the defaults, and the config file itself.

    ``spatial``: the input grid the run was fitted on (the stored input shape without its
    channels), which the task's default token cap depends on (dense tasks)."""
    from ..config import FitConfig
    from ..tasks import get_task, task_names

    defaults = FitConfig(align=config.get("align", "none"))  # align_epochs resolved too
    if config.get("task") in task_names():  # and the task's own (learning rates, token cap)
        defaults = get_task(config["task"]).with_defaults(defaults, spatial)
    defaults = defaults.to_dict()
    new_out = f"{run_dir}-again"
    data = str(config.get("data"))
    if data in IN_MEMORY and not Path(data).exists():
        return [f"# fitted on in-memory arrays: pass the same arrays again\n"
                f"transmodal.fit((x, y), config={str(run_dir / 'config.yaml')!r}, out={new_out!r})"]
    words = ["transmodal", "fit", "--data", data]
    for key, value in config.items():
        if key == "data" or key not in defaults or value == defaults[key] or value is None:
            continue
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            words += [flag] if value else []
        else:
            words += [flag, str(value)]
    words += ["--out", new_out]
    return [" ".join(shlex.quote(w) for w in words),
            " ".join(shlex.quote(w) for w in ["transmodal", "fit", "--config",
                                             str(run_dir / "config.yaml"), "--out", new_out])]


def _reproduce(run_dir: Path, config: dict[str, Any], spatial: Sequence[int]) -> str:
    lines = reproduce_command(run_dir, config, spatial)
    return "".join(f"<pre class='cmd'>{html.escape(line)}</pre>" for line in lines)


def _scores(summary: dict[str, Any]) -> str:
    metrics = summary.get("metrics") or {}
    names = list(dict.fromkeys(k for split in metrics.values() for k in split))
    rows = [[f"transmodal ({split})", *(_num(scores.get(m)) for m in names)]
            for split, scores in metrics.items()]
    for name, value in _baselines(summary.get("baselines")):
        if isinstance(value, dict):
            flat = value.get("test", value) if isinstance(value.get("test"), dict) else value
            rows.append([f"baseline: {name}", *(_num(flat.get(m)) for m in names)])
            names_extra = [k for k in flat if k not in names and isinstance(flat[k], (int, float))]
            if names_extra:
                rows[-1][0] += " (" + ", ".join(f"{k} {_num(flat[k])}" for k in names_extra) + ")"
        else:
            rows.append([f"baseline: {name}", _num(value), *([""] * (len(names) - 1))])
    return _table(["", *names], rows) + f"<p>Best epoch {summary.get('best_epoch')} of {summary.get('epochs_run')}.</p>"


def _baselines(value: Any) -> list[tuple[str, Any]]:
    """summary["baselines"] as (name, scores) pairs: a dict by name, or a list of records."""
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, list):
        return [(str(v.get("name", i)) if isinstance(v, dict) else str(i), v) for i, v in enumerate(value)]
    return []


# ----------------------------------------------------------------------------- HTML pieces
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 1.5em auto; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.15em; border-bottom: 1px solid #ccc; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }}
pre {{ background: #f5f5f5; padding: 0.6em; overflow-x: auto; }}
img {{ max-width: 100%; display: block; margin: 0.5em 0; }}
</style></head>
<body>
<h1>{title}</h1>
{body}
<p><small>Written {stamp} from the run folder {run} by <code>transmodal report</code>.</small></p>
</body></html>
"""


def _section(title: str, content: str) -> str:
    return f"<section><h2>{title}</h2>\n{content}\n</section>"


def _table(header: list[str], rows: list[list[str]], show_header: bool = True) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if show_header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table>{head}{body}</table>"


def _png(data: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"


def _img(fig: Any, alt: str) -> str:
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return _png(buf.getvalue(), alt)


def _file_img(path: Path, alt: str) -> str:
    return _png(path.read_bytes(), alt) if path.exists() else f"<p>({html.escape(path.name)} is missing)</p>"


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else ("" if v is None else str(v))


def _fmt_scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in scores.items())


__all__ = ["write_report", "reproduce_command"]
