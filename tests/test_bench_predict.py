"""``transmodal bench predict``: its rows, and ratios computed against the bare loop of the same run."""

import numpy as np

from transmodal.bench.predict_speed import measure


def test_predict_bench_rows(tiny_bodies):
    rows = measure(n=8, length=24, batch_size=2, body=str(tiny_bodies["bert"]), repeats=1)
    assert [r["path"].split()[0] for r in rows] == ["bare", "predict_outputs", "Run.predict_proba"]
    assert rows[0]["vs_bare"] == 1.0
    for r in rows:
        assert r["samples_per_s"] > 0 and np.isclose(r["samples_per_s"], 8 / r["seconds"])
