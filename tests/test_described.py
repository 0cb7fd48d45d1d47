"""The generated described-signal set: unseen combinations of seen words, fixed by the seed."""

import numpy as np
import pytest

from transmodal.data.described import (ENVELOPES, SPEEDS, WAVEFORMS, label, make_described_signals,
                                       paraphrase)


def test_split_holds_out_combinations_but_no_word():
    d = make_described_signals(n_train=3, n_test=2, length=64, seed=0)
    assert len(d.seen) == 16 and len(d.unseen) == 8 and not set(d.seen) & set(d.unseen)
    seen_words = {w for c in d.seen for w in c}
    assert seen_words == set(WAVEFORMS) | set(SPEEDS) | set(ENVELOPES)  # every word is trained on
    assert set(d.y_train) == set(d.seen_labels) and set(d.y_unseen) == set(d.unseen_labels)
    assert d.x_train.shape == (48, 1, 64) and d.x_unseen.shape == (16, 1, 64)
    assert d.x_train.dtype == np.float32


def test_same_seed_same_data_and_attributes_show_in_the_signal():
    a, b = make_described_signals(seed=3), make_described_signals(seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, make_described_signals(seed=4).x_train)
    d = make_described_signals(n_train=30, noise=0.0, seed=0)
    x, y = d.x_train[:, 0], d.y_train
    rising = np.isin(y, [label(w, s, "rising") for w in WAVEFORMS for s in SPEEDS])
    decaying = np.isin(y, [label(w, s, "decaying") for w in WAVEFORMS for s in SPEEDS])
    late = np.abs(x[:, 64:]).mean(1) - np.abs(x[:, :64]).mean(1)  # halves hold whole cycles
    assert late[rising].min() > 0 > late[decaying].max()  # the envelope words mean what they say


def test_paraphrases_use_other_words():
    for c in [("sine", "slow", "rising"), ("square", "fast", "constant")]:
        assert paraphrase(*c) != label(*c) and c[0] in paraphrase(*c)


@pytest.mark.slow
def test_bench_zeroshot_quick_runs(tmp_path):
    from transmodal.bench.zeroshot import main

    assert main(["--quick", "--out-dir", str(tmp_path)]) == 0
    text = (tmp_path / "zeroshot.md").read_text()
    assert "unseen combinations (among the 8 unseen names)" in text and "chance" in text


def test_captioned_variant_says_each_samples_size():
    from transmodal.data.described import SIZES, caption, make_captioned_signals

    d = make_captioned_signals(n_train=6, n_test=3, length=64, noise=0.0, seed=0)
    assert len(d.text_train) == len(d.x_train) == len(d.y_train) and len(d.text_unseen) == len(d.x_unseen)
    assert len(set(d.text_train)) > len(set(d.y_train))  # the size word splits the classes
    for text, y in zip(d.text_train, d.y_train):
        assert text.split()[1] in SIZES and text.replace(f" {text.split()[1]}", "", 1) == y
    peak = np.abs(d.x_train[:, 0]).max(1)
    size = np.array([t.split()[1] for t in d.text_train])
    assert peak[size == "small"].max() < peak[size == "large"].min()  # the word means what it says
    assert caption("sine", "slow", "rising", "large") == "a large slow sine wave with rising amplitude"
    np.testing.assert_array_equal(make_captioned_signals(seed=2).x_test, make_captioned_signals(seed=2).x_test)


def test_bench_zeroshot_captions_quick_runs(tiny_bodies, tmp_path):
    import json

    from transmodal.bench.zeroshot import main

    assert main(["--quick", "--captions", "--body", tiny_bodies["bert"], "--text-body",
                 tiny_bodies["bert"], "--max-tokens", "16", "--out-dir", str(tmp_path)]) == 0
    text = (tmp_path / "zeroshot_captions.md").read_text()
    assert "caption -> sample" in text and "unseen combinations" in text
    result = json.loads((tmp_path / "zeroshot_captions.json").read_text())["results"][0]
    assert set(result["unseen"]) >= {"sample_to_text_recall_at_10", "text_to_sample_recall_at_1"}
