"""The run report RUN/report/index.html: structure, images, escaping, the CLI, atomic writes,
and (slow) a real headless browser rendering it."""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import transmodal
from transmodal.cli import build_parser, main

FAST = dict(epochs=3, batch_size=8, max_tokens=16, progress=False)
PNG = b"\x89PNG\r\n\x1a\n"
SECTIONS = ["Task and data", "Reproduce", "Scores", "Learning curves", "Predictions on the",
            "Configuration (config.yaml)"]


class _Page(HTMLParser):
    """Headings, image sources and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.h2, self.imgs, self.scripts, self._in_h2 = [], [], 0, False

    def handle_starttag(self, tag, attrs):
        self._in_h2 = tag == "h2"
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        self.scripts += tag == "script"

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _assert_pngs(page: _Page, at_least: int) -> None:
    assert len(page.imgs) >= at_least
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")  # inline: no file, no network
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG)


@pytest.fixture(scope="module")
def clf_run(tiny_bodies, tmp_path_factory):
    """A classification run on arrays whose labels hold HTML: written by fit itself."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 32)).astype(np.float32)
    y = np.where(np.arange(40) % 2 == 0, "<b>sine</b>", "square & co")
    x[y == "square & co"] += np.sign(np.sin(np.arange(32)))
    out = tmp_path_factory.mktemp("report") / "clf"
    transmodal.fit((x, y), out=out, body=tiny_bodies["bert"], **FAST)
    return out, x, y


def test_fit_writes_a_self_contained_report(clf_run):
    out, _, _ = clf_run
    index = out / "report" / "index.html"
    page = _parse(index)
    for name in SECTIONS:
        assert any(h.startswith(name) for h in page.h2), name
    assert any("validation split" in h for h in page.h2)  # no test split: fit's validation split
    _assert_pngs(page, 2)  # learning curves, confusion matrix
    assert page.scripts == 0
    text = index.read_text()
    assert "&lt;b&gt;sine&lt;/b&gt;" in text and "<b>sine</b>" not in text  # labels escaped
    assert "square &amp; co" in text
    assert "transmodal.fit((x, y), config=" in text  # arrays: the Python call to reproduce
    assert "recall" in text and "macro avg" in text  # the per-class report


def test_metrics_log_the_head_learning_rate(clf_run):
    out, _, _ = clf_run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    refine = [r for r in rows if r["stage"] == "refine"]
    assert all("head_lr" in r and "lr" in r for r in refine)
    # cosine schedule: both decay from their peaks, the head's 10x the body's
    assert refine[0]["head_lr"] == pytest.approx(10 * refine[0]["lr"])


def test_report_cli_needs_data_for_array_runs_and_keeps_the_old_page(clf_run, tmp_path, capsys):
    out, x, y = clf_run
    index = out / "report" / "index.html"
    before = index.read_bytes()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--data" in err and "\n" not in err
    assert index.read_bytes() == before
    np.savez(tmp_path / "d.npz", x=x[:10], y=y[:10])
    assert main(["report", str(out), "--data", str(tmp_path / "d.npz")]) == 0
    page = _parse(index)
    assert any(h == "Predictions on the data given" for h in page.h2)
    assert "10 samples" in index.read_text()
    assert not list((out / "report").glob("*.tmp"))
    # --device: where its predictions run; a bad one writes nothing
    assert main(["report", str(out), "--data", str(tmp_path / "d.npz"), "--device", "cpu"]) == 0
    capsys.readouterr()
    written = index.read_bytes()
    assert main(["report", str(out), "--data", str(tmp_path / "d.npz"), "--device", "tpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown --device 'tpu'" in err and "\n" not in err
    assert index.read_bytes() == written


def test_report_of_an_unfinished_run_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["report", str(tmp_path / "run")]) == 2
    assert "summary.json" in capsys.readouterr().err


def test_a_failing_report_leaves_the_previous_page(clf_run, monkeypatch):
    from transmodal.report import html as report_html

    out, x, y = clf_run
    index = out / "report" / "index.html"
    before = index.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(report_html.os, "replace", boom)
    with pytest.raises(OSError):
        report_html.write_report(out, (x, y))
    assert index.read_bytes() == before and not list((out / "report").glob("*.tmp"))


def test_spec_run_reproduce_command_parses_and_baselines_show(tiny_bodies, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 24)).astype(np.float32)
    y = x[:, :4].sum(1)  # regression, with a test split in the file
    np.savez(tmp_path / "reg.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    out = tmp_path / "my run"
    transmodal.fit(str(tmp_path / "reg.npz"), out=out, body=tiny_bodies["bert"], seed=3, **FAST)
    summary = json.loads((out / "summary.json").read_text())
    summary["baselines"] = {"ridge": {"rmse": 0.123, "r2": 0.9}, "mean": 0.5}
    (out / "summary.json").write_text(json.dumps(summary))
    from transmodal.report import write_report

    page_path = write_report(out)  # its own data, from config.yaml
    text = page_path.read_text()
    assert "Predictions on the test split" in text and "baseline: ridge" in text and "0.1230" in text
    _assert_pngs(_parse(page_path), 2)  # learning curves, parity + residuals
    cmd = re.search(r"<pre class='cmd'>(transmodal fit --data .*?)</pre>", text).group(1)
    import html

    words = shlex.split(html.unescape(cmd))
    args = build_parser().parse_args(words[1:])
    assert (args.data, args.epochs, args.seed, args.max_tokens) == ([str(tmp_path / "reg.npz")], 3, 3, 16)
    assert args.body == tiny_bodies["bert"] and args.out.endswith("my run-again")


def test_dense_report_shows_examples(tiny_bodies, tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(24, 32)).astype(np.float32)
    run = transmodal.fit((x, np.cumsum(x, 1) + 5.0), out=tmp_path / "dense",
                         body=tiny_bodies["bert"], **FAST)
    text = (tmp_path / "dense" / "report" / "index.html").read_text()
    assert "predictions against targets" in text and "rel_l2" in text
    assert run.summary["task"] == "dense"


def test_reproduce_lists_a_dense_token_cap_only_when_it_is_not_the_grids_default(tmp_path):
    from transmodal.report import reproduce_command

    # a dense run on 128 points got the task's cap for that grid (one token per 4 points: 32)
    config = {"data": "burgers.npz", "task": "dense", "max_tokens": 32, "epochs": 60}
    assert "--max-tokens" not in reproduce_command(tmp_path, config, (128,))[0]
    # the same cap on a 32 x 32 grid (default 64) was the user's choice: the command keeps it
    assert "--max-tokens 32" in reproduce_command(tmp_path, config, (32, 32))[0]


@pytest.mark.slow
def test_report_renders_in_a_headless_browser(clf_run, tmp_path):
    """Chromium loads the page from disk with the network off: the screenshot is not blank and
    every <img> decoded (naturalWidth > 0, checked by a script in a copy of the page)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    out, _, _ = clf_run
    index = out / "report" / "index.html"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--proxy-server=127.0.0.1:9", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2400", index.as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # text and figures, not blank
    probe = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load', () => { const imgs = [...document.images];"
              "document.title = 'IMGS ' + imgs.length + ' DECODED ' + "
              "imgs.filter(i => i.complete && i.naturalWidth > 0).length; });</script>")
    probe.write_text(index.read_text().replace("</body>", script + "</body>"))
    dom = subprocess.run([*flags, "--dump-dom", "--virtual-time-budget=5000", probe.as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    n, decoded = map(int, re.search(r"IMGS (\d+) DECODED (\d+)", dom).groups())
    assert n >= 2 and decoded == n
