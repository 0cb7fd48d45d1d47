"""Every bad input we know of, through the API and the CLI: one clear line, no traceback,
a non-zero exit code, and never a run folder that looks complete.

One table (``CASES``), one test. Each row builds its input under a fresh folder and returns
the API call and the CLI arguments that should both fail with the same message.
"""

import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

import transmodal
from transmodal.run import checkpoint
from transmodal.cli import main
from transmodal.errors import CheckpointError, ConfigError, DataError, ResourceError
from transmodal.models.model import ModelSpec, TransmodalModel, build_model, save_model

LENGTH = 24
FIT = ["--epochs", "1", "--batch-size", "8", "--max-tokens", "8", "--quiet"]
API = dict(epochs=1, batch_size=8, max_tokens=8, progress=False)


def series(n=16, channels=1, length=LENGTH, seed=0):
    rng = np.random.default_rng(seed)
    y = np.array(["a", "b"] * (n // 2))
    x = rng.normal(size=(n, channels, length)).astype(np.float32)
    x[y == "b"] += 1.0
    return x, y


@pytest.fixture(scope="module")
def finished(tiny_bodies, tmp_path_factory):
    """A finished run (fitted from an .npz file, labels 'a'/'b', 1 x 24 series)."""
    root = tmp_path_factory.mktemp("finished")
    x, y = series()
    np.savez(root / "train.npz", x=x, y=y)
    from unittest import mock

    with mock.patch("shutil.rmtree"):  # keep the checkpoint a finished run drops: unfinished() needs it
        transmodal.fit(str(root / "train.npz"), out=root / "run", body=tiny_bodies["bert"], **API)
    return root / "run"


class Boom:
    """Unpickling this creates a folder: the test checks that it never exists."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@dataclass
class Ctx:
    tmp: Path
    bodies: dict
    finished: Path
    monkeypatch: Any
    marker: Path

    @property
    def out(self) -> Path:
        return self.tmp / "run"

    def npz(self, x, y, name="d.npz") -> str:
        path = self.tmp / name
        np.savez(path, x=x, y=y)
        return str(path)

    def npy(self, x, name="x.npy") -> str:
        np.save(self.tmp / name, x)
        return str(self.tmp / name)

    def copy_finished(self) -> Path:
        dst = self.tmp / "copy"
        shutil.copytree(self.finished, dst)
        return dst

    def unfinished(self) -> Path:
        """A copy of the finished run as if killed after its last checkpoint."""
        run = self.copy_finished()
        (run / "summary.json").unlink()
        return run

    def fit_cli(self, data: str, *extra: str) -> list[str]:
        return ["fit", "--data", data, "--body", self.bodies["bert"], "--out", str(self.out), *FIT, *extra]

    def fit_api(self, data, **extra) -> Callable[[], Any]:
        opts = {"body": self.bodies["bert"], **API, **extra}
        return lambda: transmodal.fit(data, out=self.out, **opts)


def _one_fold(c):
    x, y = series()
    return c.fit_api((x, y), folds=1), c.fit_cli(c.npz(x, y), "--folds", "1")


def _folds_above_class_size(c):
    x, y = series()  # 8 samples per class
    return c.fit_api((x, y), folds=9), c.fit_cli(c.npz(x, y), "--folds", "9")


def _unknown_method(c):
    x, y = series()
    return c.fit_api((x, y), method="best"), c.fit_cli(c.npz(x, y), "--method", "best")


def _nan_in_x(c):
    x, y = series()
    x[3, 0, 5] = np.nan
    return c.fit_api((x, y)), c.fit_cli(c.npz(x, y))


def _inf_in_y(c):
    x, _ = series()
    y = np.linspace(0, 1, len(x))
    y[2] = np.inf
    return c.fit_api((x, y)), c.fit_cli(c.npz(x, y))


def _wrong_ndim(c):
    x, y = np.zeros((16, 1, 2, 3, 4), np.float32), series()[1]
    return c.fit_api((x, y)), c.fit_cli(c.npz(x, y))


def _length_mismatch(c):
    x, y = series()
    return c.fit_api((x, y[:-3])), c.fit_cli(c.npz(x, y[:-3]))


def _zero_samples(c):
    x, y = np.zeros((0, 1, LENGTH), np.float32), np.zeros((0,), np.int64)
    return c.fit_api((x, y)), c.fit_cli(c.npz(x, y))


def _one_sample_class(c):
    x, y = series()
    y = y.copy()
    y[0] = "c"
    return c.fit_api((x, y)), c.fit_cli(c.npz(x, y))


def _string_in_csv(c):
    path = c.tmp / "d.csv"
    rows = ["f0,f1,f2,label"] + [f"{i},{i + 1},{i * 2},{'ab'[i % 2]}" for i in range(12)]
    rows[5] = "4,oops,8,a"
    path.write_text("\n".join(rows) + "\n")
    return c.fit_api(str(path)), c.fit_cli(str(path))


def _missing_in_csv(c):
    path = c.tmp / "d.csv"
    rows = ["f0,f1,f2,label"] + [f"{i},{i + 1},{i * 2},{'ab'[i % 2]}" for i in range(12)]
    rows[5] = "4,,8,a"
    path.write_text("\n".join(rows) + "\n")
    return c.fit_api(str(path)), c.fit_cli(str(path))


def _pickle_as_npz(c):
    path = c.tmp / "d.npz"
    path.write_bytes(pickle.dumps(Boom(c.marker)))
    return c.fit_api(str(path)), c.fit_cli(str(path))


def _truncated_npz(c):
    x, y = series()
    path = Path(c.npz(x, y))
    path.write_bytes(path.read_bytes()[:500])
    return c.fit_api(str(path)), c.fit_cli(str(path))


def _predict_channels(c):
    x = np.zeros((3, 2, LENGTH), np.float32)
    return (lambda: transmodal.load(c.finished).predict(x),
            ["predict", str(c.finished), "--data", c.npy(x), "--out", str(c.tmp / "p.npy")])


def _predict_grid(c):
    x = np.zeros((3, 1, LENGTH + 7), np.float32)
    return (lambda: transmodal.load(c.finished).predict(x),
            ["predict", str(c.finished), "--data", c.npy(x), "--out", str(c.tmp / "p.npy")])


def _predict_nan(c):
    x = np.zeros((3, 1, LENGTH), np.float32)
    x[1, 0, 0] = np.inf
    return (lambda: transmodal.load(c.finished).predict(x),
            ["predict", str(c.finished), "--data", c.npy(x), "--out", str(c.tmp / "p.npy")])


def _unseen_labels(c):
    x, y = series(n=6)
    y = y.astype(object)
    y[1] = "zebra"
    y = y.astype(str)
    return (lambda: transmodal.load(c.finished).evaluate(x, y),
            ["evaluate", str(c.finished), "--data", c.npz(x, y)])


def _unknown_ucr(c):
    return c.fit_api("ucr:NoSuchSet"), c.fit_cli("ucr:NoSuchSet")


def _unknown_body(c):
    x, y = series()
    return c.fit_api((x, y), body="no-such/model"), c.fit_cli(c.npz(x, y), "--body", "no-such/model")


def _body_without_inputs_embeds(c):
    from transformers import ResNetConfig, ResNetModel

    ResNetModel(ResNetConfig(hidden_sizes=[8, 8, 8, 8], embedding_size=8, depths=[1, 1, 1, 1])
                ).save_pretrained(c.tmp / "resnet")
    x, y = series()
    body = str(c.tmp / "resnet")
    return c.fit_api((x, y), body=body), c.fit_cli(c.npz(x, y), "--body", body)


def _out_of_memory(c):
    def forward(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    c.monkeypatch.setattr(TransmodalModel, "forward", forward)
    x, y = series()
    return c.fit_api((x, y)), c.fit_cli(c.npz(x, y))


def _out_of_memory_in_predict(c):
    def forward(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    c.monkeypatch.setattr(TransmodalModel, "forward", forward)
    x = np.zeros((3, 1, LENGTH), np.float32)
    return (lambda: transmodal.load(c.finished).predict(x),
            ["predict", str(c.finished), "--data", c.npy(x), "--out", str(c.tmp / "p.npy")])


def _truncated_safetensors(c):
    run = c.copy_finished()
    weights = run / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    x = np.zeros((2, 1, LENGTH), np.float32)
    return (lambda: transmodal.load(run),
            ["predict", str(run), "--data", c.npy(x), "--out", str(c.tmp / "p.npy")])


def _model_of_other_architecture(c):
    run = c.copy_finished()
    spec = ModelSpec(task="classification", n_outputs=5, in_channels=3, spatial=[40], body=c.bodies["bert"])
    save_model(build_model(spec), c.tmp / "other", {})
    shutil.copy(c.tmp / "other" / "model.safetensors", run / "model" / "model.safetensors")
    x = np.zeros((2, 1, LENGTH), np.float32)
    return (lambda: transmodal.load(run),
            ["predict", str(run), "--data", c.npy(x), "--out", str(c.tmp / "p.npy")])


def _checkpoint_of_other_architecture(c):
    run = c.unfinished()
    path = run / "checkpoint" / "checkpoint.pt"
    ckpt = checkpoint.load(path)
    spec = ModelSpec(task="classification", n_outputs=5, in_channels=3, spatial=[40], body=c.bodies["bert"])
    ckpt["model"] = build_model(spec).state_dict()
    checkpoint.save(path, ckpt)
    return lambda: transmodal.fit(resume=run, progress=False), ["fit", "--resume", str(run), "--quiet"]


def _pickle_as_model(c):
    run = c.copy_finished()
    (run / "model" / "model.safetensors").write_bytes(pickle.dumps(Boom(c.marker)))
    x = np.zeros((2, 1, LENGTH), np.float32)
    return (lambda: transmodal.load(run),
            ["predict", str(run), "--data", c.npy(x), "--out", str(c.tmp / "p.npy")])


def _pickle_as_checkpoint(c):
    run = c.unfinished()
    torch.save({"format": checkpoint.FORMAT, "stage": "refine", "evil": Boom(c.marker)},
               run / "checkpoint" / "checkpoint.pt")
    return lambda: transmodal.fit(resume=run, progress=False), ["fit", "--resume", str(run), "--quiet"]


def _resume_complete_run(c):
    run = c.copy_finished()
    return lambda: transmodal.fit(resume=run), ["fit", "--resume", str(run), "--quiet"]


def _resume_conflicting_options(c):
    run = c.unfinished()
    return (lambda: transmodal.fit(resume=run, lr=0.5),
            ["fit", "--resume", str(run), "--lr", "0.5", "--quiet"])


def _one_sample_class_in_csv(c):
    path = c.tmp / "d.csv"
    labels = ["a", "b"] * 6 + ["c"]
    rows = ["f0,f1,f2,label"] + [f"{i},{i + 1},{i * 2},{v}" for i, v in enumerate(labels)]
    path.write_text("\n".join(rows) + "\n")
    return c.fit_api(str(path)), c.fit_cli(str(path))


def _empty_samples(c):
    x, y = np.zeros((16, 1, 0), np.float32), series()[1]
    return c.fit_api((x, y)), c.fit_cli(c.npz(x, y))


def _csv_without_features(c):
    path = c.tmp / "d.csv"
    path.write_text("label\n" + "a\nb\n" * 6)
    return c.fit_api(str(path)), c.fit_cli(str(path))


def _folder_without_prefix(c):
    (c.tmp / "images" / "cats").mkdir(parents=True)
    return c.fit_api(str(c.tmp / "images")), c.fit_cli(str(c.tmp / "images"))


def _negative_lr(c):
    x, y = series()
    return c.fit_api((x, y), lr=-1e-4), c.fit_cli(c.npz(x, y), "--lr", "-1e-4")


def _predict_zero_rows(c):
    x = np.zeros((0, 1, LENGTH), np.float32)
    return (lambda: transmodal.load(c.finished).predict(x),
            ["predict", str(c.finished), "--data", c.npy(x), "--out", str(c.tmp / "p.npy")])


def _evaluate_regression_on_strings(c):
    x, y = series()
    run = c.tmp / "regression"
    transmodal.fit((x, x.mean(axis=(1, 2))), out=run, body=c.bodies["bert"], **API)
    return (lambda: transmodal.load(run).evaluate(x, y),
            ["evaluate", str(run), "--data", c.npz(x, y)])


def _label_texts(c, mapping):
    path = c.tmp / "texts.yaml"
    path.write_text("".join(f"{json.dumps(k)}: {json.dumps(v)}\n" for k, v in mapping.items()))
    return str(path)


def _generate(c, mapping=None, y=None, extra_cli=(), **extra):
    """A --head generate fit (its decoder from the tiny BERT folder) on ``series()``."""
    x, y0 = series()
    y = y0 if y is None else y
    texts = {} if mapping is None else {"label_texts": _label_texts(c, mapping)}
    cli = ["--head", "generate", "--text-body", c.bodies["bert"], *extra_cli]
    if texts:
        cli += ["--label-texts", texts["label_texts"]]
    return (c.fit_api((x, y), head="generate", text_body=c.bodies["bert"], **texts, **extra),
            c.fit_cli(c.npz(x, y), *cli))


def _label_text_without_tokens(c):
    return _generate(c, {"a": "\u200b", "b": "beta"})


def _labels_with_the_same_text(c):
    return _generate(c, {"a": "same", "b": "same"})


def _labels_with_the_same_tokens(c):
    return _generate(c, {"a": "Sine", "b": "sine"})


def _label_texts_missing_a_label(c):
    return _generate(c, {"a": "alpha"})


def _label_texts_naming_unknown_labels(c):
    return _generate(c, {"a": "alpha", "b": "beta", "zebra": "stripes"})


def _generate_with_regression(c):
    x, _ = series()
    y = np.linspace(0, 1, len(x))
    return (c.fit_api((x, y), head="generate", task="regression"),
            c.fit_cli(c.npz(x, y), "--head", "generate", "--task", "regression"))


def _generate_with_inferred_dense_task(c):
    x, _ = series()
    y = (x > 0).astype(np.int64)[:, 0]  # a mask shaped like the series: dense, inferred
    return c.fit_api((x, y), head="generate"), c.fit_cli(c.npz(x, y), "--head", "generate")


def _decode_with_linear_head(c):
    x, y = series()
    return c.fit_api((x, y), decode="free"), c.fit_cli(c.npz(x, y), "--decode", "free")


# name, case, error class, message (regex, from the start of the message)
CASES = [
    ("nan in x", _nan_in_x, DataError, r"x contains NaN or inf \(first at sample 3\); fill or drop"),
    ("inf in y", _inf_in_y, DataError, r"y contains NaN or inf \(first at sample 2\); drop those samples"),
    ("wrong number of dims", _wrong_ndim, DataError, r"x has shape \(16, 1, 2, 3, 4\); expected \(N, L\)"),
    ("x and y lengths differ", _length_mismatch, DataError, r"x has 16 samples but y has 13; they must match"),
    ("zero samples", _zero_samples, DataError, r"x has zero samples; give at least"),
    ("class with one sample", _one_sample_class, DataError, r"class 'c' has a single sample; each class needs at least 2"),
    ("class with one sample in a csv", _one_sample_class_in_csv, DataError, r"class 'c' has a single sample; each class needs at least 2"),
    ("empty samples", _empty_samples, DataError, r"x has shape \(16, 1, 0\): every sample is empty"),
    ("csv without feature columns", _csv_without_features, DataError, r".*d\.csv: no feature columns \(only the label or id column\)"),
    ("folder without folder:", _folder_without_prefix, DataError, r".*images is a folder without x_train.npy .* for an image folder \(one sub-folder per class\) use --data folder:.*images"),
    ("one fold", _one_fold, ConfigError, r"--folds 1: give 2 or more folds, or 0"),
    ("more folds than a class has samples", _folds_above_class_size, DataError, r"--folds 9: class 'a' has only 8 training samples.*use --folds 8 or fewer"),
    ("unknown method", _unknown_method, ConfigError, r"unknown --method 'best'; choose one of model, auto"),
    ("negative learning rate", _negative_lr, ConfigError, r"--lr must be positive"),
    ("string in numeric csv column", _string_in_csv, DataError, r".*d\.csv: column 'f1' holds non-numeric values \(e\.g\. 'oops'\)"),
    ("empty cell in csv", _missing_in_csv, DataError, r"x contains NaN or inf \(first at sample 4\)"),
    ("pickle renamed as .npz", _pickle_as_npz, DataError, r".*d\.npz holds pickled \(object\) data, which transmodal never loads"),
    ("truncated .npz", _truncated_npz, DataError, r".*d\.npz is not a readable \.npz file \(BadZipFile\)"),
    ("predict: other channel count", _predict_channels, DataError, r"input has 2 channels; the model was trained on 1"),
    ("predict: other grid size", _predict_grid, DataError, r"input grid \(31,\) differs from the training grid \(24,\); resample or crop"),
    ("predict: inf in x", _predict_nan, DataError, r"input contains NaN or inf; fill or drop"),
    ("predict: zero rows", _predict_zero_rows, DataError, r"the input has no samples \(0 rows\)"),
    ("evaluate: regression run on string labels", _evaluate_regression_on_strings, DataError, r"this regression model predicts numbers, but the labels are not numeric \(e\.g\. 'a'\)"),
    ("evaluate: unseen labels", _unseen_labels, DataError, r"labels \['zebra'\] were not seen in training"),
    ("unknown ucr name", _unknown_ucr, DataError, r"unknown or unavailable dataset 'ucr:NoSuchSet'"),
    ("unknown body", _unknown_body, ConfigError, r"unknown body 'no-such/model'"),
    ("body without inputs_embeds", _body_without_inputs_embeds, ConfigError, r"body type 'resnet' is not supported"),
    ("batch too large for memory", _out_of_memory, ResourceError, r"out of memory in stage refine at --batch-size 8; try --batch-size 4"),
    ("out of memory in predict", _out_of_memory_in_predict, ResourceError, r"out of memory in stage predict at batch size \d+; the model itself may not fit"),
    ("truncated safetensors", _truncated_safetensors, CheckpointError, r".*model\.safetensors is not a readable safetensors file"),
    ("model of another architecture", _model_of_other_architecture, CheckpointError, r".*does not match the architecture in model\.json"),
    ("checkpoint of another architecture", _checkpoint_of_other_architecture, CheckpointError, r"checkpoint \(stage refine\) holds weights of another architecture"),
    ("pickle renamed as model", _pickle_as_model, CheckpointError, r".*model\.safetensors is not a readable safetensors file"),
    ("pickle renamed as checkpoint", _pickle_as_checkpoint, CheckpointError, r".*checkpoint\.pt is not a readable transmodal checkpoint"),
    ("resume a complete run", _resume_complete_run, ConfigError, r"--resume .*: the run is already complete"),
    ("resume with other options", _resume_conflicting_options, ConfigError, r"--resume .*: --lr 0\.5 \(the run has 0\.0001\)"),
    ("generate: label text without tokens", _label_text_without_tokens, DataError, r"the label text '.+' tokenises to nothing"),
    ("generate: two labels, one text", _labels_with_the_same_text, DataError, r"labels 'a' and 'b' have the same text 'same'"),
    ("generate: two labels, same tokens", _labels_with_the_same_tokens, DataError, r"the label texts 'Sine' and 'sine' tokenise to the same tokens"),
    ("generate: label texts missing a label", _label_texts_missing_a_label, DataError, r"--label-texts has no text for the label\(s\) \['b'\]"),
    ("generate: label texts naming unknown labels", _label_texts_naming_unknown_labels, DataError, r"--label-texts names label\(s\) \['zebra'\] that the data do not have"),
    ("generate: regression task", _generate_with_regression, ConfigError, r"--head generate writes class labels as text: it needs a classification task, and this run's task is regression"),
    ("generate: inferred dense task", _generate_with_inferred_dense_task, ConfigError, r"--head generate writes class labels as text: it needs a classification task, and this run's task is dense"),
    ("decode with a linear head", _decode_with_linear_head, ConfigError, r"--decode applies to --head generate only"),
]

MESSAGES: dict[tuple[str, str], str] = {}  # (case, surface) -> the message a user saw


@pytest.mark.parametrize("surface", ["api", "cli"])
@pytest.mark.parametrize("name, make, error, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, make, error, message, surface, tiny_bodies, finished, tmp_path,
                   monkeypatch, capsys):
    c = Ctx(tmp_path, tiny_bodies, finished, monkeypatch, tmp_path / "UNPICKLED")
    api, argv = make(c)
    capsys.readouterr()
    if surface == "api":
        with pytest.raises(error, match=message) as info:
            api()
        text = str(info.value)
    else:
        rc = main(argv)
        captured = capsys.readouterr()
        assert rc == 2, captured.err
        assert "Traceback" not in captured.err
        assert len(captured.err.splitlines()) == 1, captured.err
        assert captured.err.startswith("error: ")
        text = captured.err[len("error: "):].rstrip("\n")
        assert re.match(message, text), text
    assert "\n" not in text
    MESSAGES[(name, surface)] = text
    assert not c.marker.exists(), "a pickle was executed"
    # never a run folder that looks complete (the finished run's copies were complete before)
    if c.out.exists():
        assert not (c.out / "summary.json").exists()
    for run in (tmp_path / "copy",):
        if run.exists() and make not in (_truncated_safetensors, _model_of_other_architecture,
                                         _pickle_as_model, _resume_complete_run):
            assert not (run / "summary.json").exists()
