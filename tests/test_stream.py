"""Data larger than memory (data/stream.py): .npy folders and shards stream through fit and
predict with the in-memory results; statistics from a streaming pass; bad folders refused."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import transmodal
from transmodal.cli import main
from transmodal.data import load_dataset
from transmodal.data.stream import channel_stats, open_npy
from transmodal.errors import DataError

FAST = dict(epochs=2, batch_size=8, max_tokens=8, progress=False, head_lr=3e-3)


def _folder(root, x, y, shards=None, test=None):
    """A data folder: x_train.npy (or x_train/ shards split at ``shards``), y_train.npy."""
    root.mkdir(parents=True)
    if shards is None:
        np.save(root / "x_train.npy", x)
    else:
        (root / "x_train").mkdir()
        for i, part in enumerate(np.split(x, shards)):
            np.save(root / "x_train" / f"{i:03d}.npy", part)
    np.save(root / "y_train.npy", y)
    if test is not None:
        np.save(root / "x_test.npy", test[0])
        np.save(root / "y_test.npy", test[1])
    return root


def _same_fit(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.preprocessor.to_dict() == b.preprocessor.to_dict()
    assert a.summary["metrics"] == b.summary["metrics"]


def test_folder_and_shards_fit_bit_identical_to_arrays(tiny_bodies, toy_series, tmp_path):
    x, y = toy_series  # (40, 48) float32: stored (N, L), read as (N, 1, L)
    x64 = x.astype(np.float64)  # stored as float64: cast per read as fit casts arrays
    test = (x64[30:], y[30:])
    ref = transmodal.fit({"x_train": x[:30], "y_train": y[:30], "x_test": x[30:], "y_test": y[30:]},
                         body=tiny_bodies["bert"], **FAST)
    one = transmodal.fit(str(_folder(tmp_path / "one", x64[:30], y[:30], test=test)),
                         body=tiny_bodies["bert"], **FAST)
    shards = transmodal.fit(str(_folder(tmp_path / "shards", x64[:30], y[:30], shards=[7, 19], test=test)),
                            body=tiny_bodies["bert"], **FAST)
    _same_fit(one, ref)
    _same_fit(shards, ref)
    assert one.summary["n_test"] == 10 and one.summary["baselines"]["linear"]["accuracy"] == \
        ref.summary["baselines"]["linear"]["accuracy"]  # small data: read in for the baselines


def test_streaming_stats_equal_in_memory_stats(tmp_path, toy_series):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(53, 3, 40)) * [[[1.0], [50.0], [1e-3]]] + [[[0.0], [1e4], [-2.0]]])
    folder = _folder(tmp_path / "d", x.astype(np.float32), np.arange(53) % 2, shards=[10, 11, 40])
    disk = load_dataset(str(folder)).x_train
    mean, std, low, high = channel_stats(disk, chunk_bytes=7 * 3 * 40 * 4)  # 7 rows: 8 chunks
    ref = x.astype(np.float32)
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2), dtype=np.float64), rtol=1e-12, atol=0)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2), dtype=np.float64), rtol=1e-12, atol=0)
    assert (low, high) == (float(ref.min()), float(ref.max()))


def test_fit_with_many_chunks_matches_in_memory_stats(tiny_bodies, toy_series, tmp_path, monkeypatch):
    import transmodal.data.stream as stream

    x, y = toy_series
    monkeypatch.setattr(stream, "CHUNK_BYTES", 5 * 48 * 4)  # 5 rows per chunk: the streaming pass
    run = transmodal.fit(str(_folder(tmp_path / "d", x, y)), body=tiny_bodies["bert"], **FAST)
    ref = transmodal.fit((x, y), body=tiny_bodies["bert"], **FAST)
    np.testing.assert_allclose(run.preprocessor.x_mean, ref.preprocessor.x_mean, rtol=1e-12)
    np.testing.assert_allclose(run.preprocessor.x_std, ref.preprocessor.x_std, rtol=1e-12)
    assert run.summary["metrics"]["val"]["accuracy"] == pytest.approx(
        ref.summary["metrics"]["val"]["accuracy"], abs=0.2)  # last-bit differences only


def test_predict_on_disk_equals_in_memory(tiny_bodies, toy_series, tmp_path):
    x, y = toy_series
    run_dir = tmp_path / "run"
    run = transmodal.fit((x[:30], y[:30]), body=tiny_bodies["bert"], out=run_dir, **FAST)
    np.save(tmp_path / "x.npy", x)
    expected = run.predict_proba(x)
    np.testing.assert_array_equal(run.predict_proba(open_npy(tmp_path / "x.npy")), expected)
    np.testing.assert_array_equal(run.predict_proba(np.load(tmp_path / "x.npy", mmap_mode="r")), expected)
    assert run.evaluate(open_npy(tmp_path / "x.npy"), y) == run.evaluate(x, y)
    assert main(["predict", str(run_dir), "--data", str(tmp_path / "x.npy"), "--out",
                 str(tmp_path / "p.npy"), "--proba"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), expected)


def _missing_x(root):
    root.mkdir()
    np.save(root / "y_train.npy", np.zeros(4))


def _shard_shapes(root):
    (root / "x_train").mkdir(parents=True)
    np.save(root / "x_train" / "000.npy", np.zeros((4, 1, 48), np.float32))
    np.save(root / "x_train" / "001.npy", np.zeros((4, 1, 40), np.float32))
    np.save(root / "y_train.npy", np.zeros(8))


def _y_length(root):
    (root / "x_train").mkdir(parents=True)
    for i in range(2):
        np.save(root / "x_train" / f"{i:03d}.npy", np.zeros((4, 48), np.float32))
    np.save(root / "y_train.npy", np.zeros(7))


def _object_dtype(root):
    root.mkdir()
    np.save(root / "x_train.npy", np.array([[1.0, "a"]] * 4, dtype=object), allow_pickle=True)
    np.save(root / "y_train.npy", np.zeros(4))


@pytest.mark.parametrize("make, message", [
    (_missing_x, r"d is a folder without x_train\.npy \(or an x_train/ folder of \.npy shards\)"),
    (_shard_shapes, r"shard 001\.npy holds samples \(1, 40\) of float32 but 000\.npy holds \(1, 48\)"),
    (_y_length, r"x_train has 8 samples in 2 shards but y_train has 7; they must match"),
    (_object_dtype, r"x_train holds pickled \(object\) data, which transmodal never loads"),
])
def test_bad_folders_one_clear_line(make, message, tmp_path, capsys):
    make(tmp_path / "d")
    with pytest.raises(DataError, match=message):
        load_dataset(str(tmp_path / "d"))
    assert main(["fit", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not (tmp_path / "r").exists()


def test_nan_on_disk_is_refused_before_training(tmp_path):
    x = np.zeros((20, 1, 16), np.float32)
    x[13, 0, 3] = np.nan
    folder = _folder(tmp_path / "d", x, np.arange(20) % 2)
    with pytest.raises(DataError, match=r"contains NaN or inf \(first at sample"):
        transmodal.fit(str(folder), body="unused-body-never-loaded", progress=False)


@pytest.mark.slow
def test_streaming_pass_rss_below_file_size(tmp_path):
    """A 128 MiB input file: the statistics, finiteness and fingerprint passes (what fit reads
    whole) add far less than its size to the resident memory of a fresh process."""
    rows, per_row = 1024, 32 * 1024  # 1024 x (1, 32768) float32 = 128 MiB
    path = tmp_path / "x_train.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, 1, per_row))
    for i in range(0, rows, 256):
        mm[i: i + 256] = np.random.default_rng(i).standard_normal((256, 1, per_row), np.float32)
    mm.flush()
    del mm
    script = textwrap.dedent(f"""
        import json
        import transmodal.data.stream as s
        from transmodal.run.checkpoint import data_fingerprint
        from transmodal.run.fit import peak_rss_mb  # VmHWM (ru_maxrss starts at pytest's peak)
        s.CHUNK_BYTES = 4 * 2**20
        before = peak_rss_mb()  # imports (torch)
        x = s.open_npy({str(path)!r})
        mean, std, low, high = s.channel_stats(x)
        s.check_finite(x, "x")
        data_fingerprint(x)
        peak = peak_rss_mb()
        print(json.dumps({{"added_mb": peak - before, "std": float(std[0])}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(result["std"] - 1.0) < 1e-2
    assert result["added_mb"] < 32, result  # the file is 128 MiB


def _series_file(path, rows, shape, seed):
    """A (rows, *shape) float32 .npy written a block at a time (never whole in this process)."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, *shape))
    for i in range(0, rows, 64):
        n = min(64, rows - i)
        mm[i: i + n] = np.random.default_rng(seed + i).standard_normal((n, *shape), np.float32)
    mm.flush()
    del mm
    return np.arange(rows) % 2


@pytest.mark.slow  # a fresh process (imports ~7 s idle, ~30 s on the busy 2 cores) and 200 MiB
def test_memory_mapped_input_larger_than_the_memory_fit_may_add(tiny_bodies, tmp_path):
    """A 200 MiB np.memmap (np.load(mmap_mode="r")) fitted in a fresh process adds far less
    than its size to the peak resident memory of the same fit on a 32 MiB one (imports, the
    model, the same batches: what a fit costs whatever the file): rows are read with preadv,
    not through the mapping, and normalised a block at a time. The process's VmHWM (its
    ru_maxrss would start at pytest's peak)."""
    shape, big_rows = (16, 8192), 400  # 512 KiB per sample: 400 samples = 200 MiB
    y_small = _series_file(tmp_path / "small.npy", 64, shape, 0)
    y_big = _series_file(tmp_path / "big.npy", big_rows, shape, 1)
    np.save(tmp_path / "y_small.npy", y_small)
    np.save(tmp_path / "y_big.npy", y_big)
    file_mb = (tmp_path / "big.npy").stat().st_size / 2**20
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import transmodal

        peak_mb = sys.modules["transmodal.run.fit"].peak_rss_mb  # VmHWM: this process's own peak

        def fit(name):
            x = np.load({str(tmp_path)!r} + f"/{{name}}.npy", mmap_mode="r")
            y = np.load({str(tmp_path)!r} + f"/y_{{name}}.npy")
            return transmodal.fit((x, y), body={tiny_bodies["bert"]!r}, epochs=1, batch_size=16,
                                  max_tokens=16, baselines="none", val_fraction=0.5,
                                  progress=False, device="cpu")

        fit("small")  # the fixed cost: imports, the model, batches of 16 and 32 (validation)
        before = peak_mb()
        run = fit("big")
        print(json.dumps({{"before": before, "after": peak_mb(), "n_train": run.summary["n_train"]}}))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n_train"] == big_rows // 2  # the whole file was trained and validated on
    added = result["after"] - result["before"]
    assert file_mb > 190 and added < file_mb / 4, (added, file_mb, result)  # the file is 200 MiB


def test_memmap_of_a_whole_file_is_read_from_the_file(tmp_path):
    """np.load(mmap_mode="r") is read with preadv (not through the mapping); a slice, a
    copy-on-write or a Fortran-order memmap through its own slicing; all give the same rows."""
    from transmodal.data.stream import from_memmap

    x = np.arange(5 * 2 * 6, dtype=">f8").reshape(5, 2, 6)  # big-endian float64: cast per read
    np.save(tmp_path / "x.npy", x)
    whole = from_memmap(np.load(tmp_path / "x.npy", mmap_mode="r"))
    assert whole.parts[0][0] == str(tmp_path / "x.npy") and whole.parts[0][1] > 0
    np.testing.assert_array_equal(whole.read(np.array([4, 0, 2])), x[[4, 0, 2]].astype(np.float32))
    for other in (np.load(tmp_path / "x.npy", mmap_mode="r")[1:],
                  np.load(tmp_path / "x.npy", mmap_mode="c")):
        view = from_memmap(other)
        assert isinstance(view.parts[0][0], np.memmap)
        np.testing.assert_array_equal(np.asarray(view), np.asarray(other, dtype=np.float32))


@pytest.mark.parametrize("norm, dtype", [("channel", np.float32), ("channel", np.float64),
                                         ("unit", np.float32), ("unit", np.uint8)])
def test_blockwise_normalisation_equals_the_whole_array_formula(norm, dtype, monkeypatch):
    """transform_x works a block of rows at a time (bounded temporaries): bit for bit the
    values of the formula on the whole array, also when it overwrites a read buffer."""
    import transmodal.data.preprocess as preprocess
    from transmodal.tasks import get_task

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(23, 3, 7)) * 40 + 100).clip(0, 255).astype(dtype)
    pre = preprocess.Preprocessor.fit(x, np.arange(23) % 2, get_task("classification"), image_norm=norm)
    shape = (1, -1, 1)
    if norm == "unit":
        low, high = pre.pixel_range
        expected = ((x - low) / (high - low)).astype(np.float32)
    else:
        expected = ((x - np.asarray(pre.x_mean).reshape(shape)) / np.asarray(pre.x_std).reshape(shape)
                    ).astype(np.float32)
    monkeypatch.setattr(preprocess, "BLOCK_ELEMENTS", 2 * 3 * 7)  # 2 rows per block: 12 blocks
    np.testing.assert_array_equal(pre.transform_x(x), expected)
    scratch = x.astype(np.float32)
    got = pre.transform_x(scratch, overwrite=True)
    if dtype == np.float32:
        assert got is scratch
    np.testing.assert_array_equal(got, expected if dtype == np.float32 else
                                  pre.transform_x(x.astype(np.float32)))
