"""Write ``tests/reference/legacy/``: run files made by transmodal before the issue-10 refactor.

They prove that model folders and checkpoints written by earlier versions still load (or are
refused with a clear message). Made once, with the code of commit c4a3863; kept in git
(a few hundred KB: a tiny BERT with a 64-word vocabulary, and CNN LoRA adapters only).

    OMP_NUM_THREADS=1 .venv/bin/python tests/reference/make_legacy.py
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
LEGACY = HERE / "legacy"
sys.path.insert(0, str(HERE))

from cases import datasets, weights_sha256  # noqa: E402

OPTIONS = dict(epochs=4, batch_size=8, max_tokens=16, seed=0, progress=False, device="cpu")


class Interrupt(Exception):
    pass


def main() -> int:
    import torch
    from transformers import BertConfig, BertModel

    import transmodal
    from transmodal import runfolder

    torch.set_num_threads(1)
    shutil.rmtree(LEGACY, ignore_errors=True)
    LEGACY.mkdir(parents=True)
    torch.manual_seed(0)
    body = LEGACY / "body"
    BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32)).save_pretrained(body)
    data = datasets()
    expected: dict = {}

    # a finished run (text body) and a finished CNN LoRA run (adapters + head only)
    series, images = data["series_class"], data["image_class"]
    run = transmodal.fit(series, out=LEGACY / "finished", body=str(body), **OPTIONS)
    expected["finished_proba"] = run.predict_proba(series["x_test"]).tolist()
    cnn = transmodal.fit(images, out=LEGACY / "cnn_lora", body="efficientnet-lite0", tune="lora",
                         image_size=32, **OPTIONS)
    expected["cnn_lora_proba"] = cnn.predict_proba(images["x_test"]).tolist()
    for name in ("finished", "cnn_lora"):
        shutil.rmtree(LEGACY / name / "report")

    # an unfinished run: killed after refine epoch 3 was logged, so its checkpoint is epoch 2;
    # and the same run uninterrupted, whose final weights a resume must reproduce
    ref = transmodal.fit(series, out=LEGACY / "tmp-ref", body=str(body), checkpoint_every=1,
                         **OPTIONS)
    expected["resumed_weights_sha256"] = weights_sha256(LEGACY / "tmp-ref" / "model")
    expected["resumed_test"] = ref.summary["metrics"]["test"]
    shutil.rmtree(LEGACY / "tmp-ref")
    log = runfolder.RunFolder.log

    def log_then_stop(self, record):
        if record["stage"] == "refine" and record["epoch"] == 3:
            raise Interrupt
        log(self, record)

    runfolder.RunFolder.log = log_then_stop
    try:
        transmodal.fit(series, out=LEGACY / "unfinished", body=str(body), checkpoint_every=1,
                       **OPTIONS)
    except Interrupt:
        pass
    finally:
        runfolder.RunFolder.log = log
    assert (LEGACY / "unfinished" / "checkpoint" / "checkpoint.pt").exists()
    (LEGACY / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    np.savez(LEGACY / "data.npz", **series)
    print(f"wrote {LEGACY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
