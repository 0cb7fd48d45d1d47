"""A refactor changes no result: seeded fits give the recorded scores and weights, bit for bit.

``tests/reference/outputs.json`` was recorded with the code before the issue-10 refactor
(tasks, one loop, registries); ``tests/reference/legacy/`` holds run files written by that code.
See ``tests/reference/cases.py`` for the cases and how to re-record them on purpose.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import transmodal

REF = Path(__file__).parent / "reference"
sys.path.insert(0, str(REF))

import cases  # noqa: E402

RECORDED, EXPECTED = cases.recorded()  # this kind of CPU's record (cases.platform())
LEGACY = REF / "legacy"


def _same_versions() -> str:
    now = cases.versions()
    diff = [f"{k} {RECORDED['versions'][k]} -> {now[k]}" for k in now if now[k] != RECORDED["versions"].get(k)]
    return "; ".join(diff)


@pytest.fixture(scope="module")
def reference_env(tmp_path_factory):
    changed = _same_versions()
    if changed:  # float results are only bit-identical for one set of library versions
        pytest.skip(f"reference outputs were recorded with other versions ({changed}); "
                    "re-record with tests/reference/cases.py --write on the old code")
    return cases.tiny_bodies(tmp_path_factory.mktemp("ref-bodies")), cases.datasets()


@pytest.mark.parametrize("name", cases.all_names())
def test_fit_outputs_are_bit_identical_to_the_recorded_ones(name, reference_env, tmp_path):
    bodies, data = reference_env
    got = cases.run_case(name, bodies, data, tmp_path)
    assert got == RECORDED["cases"][name], (
        f"on {cases.platform()}: if this kind of CPU has no record in tests/reference/platforms.json, "
        "record one (tests/reference/cases.py) with the code of a commit that matched a recorded CPU")


def test_every_recorded_case_is_still_run():
    assert sorted(RECORDED["cases"]) == sorted(cases.all_names())


def test_model_folder_from_before_the_refactor_loads_and_predicts_the_same():
    data = np.load(LEGACY / "data.npz")
    run = transmodal.load(LEGACY / "finished")
    np.testing.assert_array_equal(run.predict_proba(data["x_test"]),
                                  np.asarray(EXPECTED["finished_proba"], dtype=np.float32))
    assert set(run.predict(data["x_test"])) <= {"sine", "square"}


def test_cnn_lora_folder_from_before_the_refactor_loads_and_predicts_the_same():
    x = cases.datasets()["image_class"]["x_test"]
    run = transmodal.load(LEGACY / "cnn_lora")
    np.testing.assert_array_equal(run.predict_proba(x),
                                  np.asarray(EXPECTED["cnn_lora_proba"], dtype=np.float32))


def test_checkpoint_from_before_the_refactor_resumes_to_the_same_weights(tmp_path):
    if _same_versions():
        pytest.skip("bit-identical resume is recorded for one set of library versions")
    run = tmp_path / "unfinished"
    resumed = cases.resume_legacy(run)
    assert cases.weights_sha256(run / "model") == EXPECTED["resumed_weights_sha256"]
    assert resumed.summary["metrics"]["test"] == EXPECTED["resumed_test"]
