"""A generated set for zero-shot tests: signals whose classes are combinations of words.

Every signal has three attributes said in words: a **waveform** (sine, square, sawtooth,
triangle), a **speed** (slow: 2 cycles, fast: 8 cycles over the window, each +-10 %, random
phase) and an **envelope** of its amplitude (rising, decaying, constant), plus Gaussian noise.
A class is one combination, named by a sentence ("a slow sine wave with rising amplitude").

The split keeps whole *combinations* out of training while every attribute word is seen in
training: a combination (w, s, e) (indices in the lists above) is unseen when
``(w + s + e) % 3 == 0``, which holds for exactly one envelope per (waveform, speed) pair: 8
unseen combinations, 16 seen, each word in 4 or more seen ones. Zero-shot on an unseen
combination is then a real test of composing words the model learned apart (DESIGN.md, "CLIP").

A caption-per-sample variant (:func:`make_captioned_signals`) adds a per-sample detail said in
words: the **size** of the signal (small, medium, large: the amplitude times 0.4, 1 or 2.5),
so samples of one class have different captions ("a large slow sine wave with rising
amplitude") and retrieval must read the size too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WAVEFORMS = ("sine", "square", "sawtooth", "triangle")
SPEEDS = ("slow", "fast")
ENVELOPES = ("rising", "decaying", "constant")
CYCLES = {"slow": 2.0, "fast": 8.0}


def label(waveform: str, speed: str, envelope: str) -> str:
    """The class name: the words of the three attributes in one sentence."""
    return f"a {speed} {waveform} wave with {envelope} amplitude"


def paraphrase(waveform: str, speed: str, envelope: str) -> str:
    """The same class in other words (for testing prompts the model never saw)."""
    pace = {"slow": "low", "fast": "high"}[speed]
    trend = {"rising": "grows", "decaying": "fades", "constant": "stays level"}[envelope]
    return f"{waveform} oscillation at {pace} frequency whose amplitude {trend}"


def combinations() -> list[tuple[str, str, str]]:
    return [(w, s, e) for w in WAVEFORMS for s in SPEEDS for e in ENVELOPES]


def is_unseen(waveform: str, speed: str, envelope: str) -> bool:
    return (WAVEFORMS.index(waveform) + SPEEDS.index(speed) + ENVELOPES.index(envelope)) % 3 == 0


@dataclass
class DescribedSignals:
    """x arrays are (N, 1, length) float32; y arrays hold class sentences (``label``)."""

    x_train: np.ndarray  # seen combinations only
    y_train: np.ndarray
    x_test: np.ndarray  # seen combinations, new samples
    y_test: np.ndarray
    x_unseen: np.ndarray  # unseen combinations
    y_unseen: np.ndarray
    seen: list[tuple[str, str, str]]
    unseen: list[tuple[str, str, str]]

    @property
    def seen_labels(self) -> list[str]:
        return [label(*c) for c in self.seen]

    @property
    def unseen_labels(self) -> list[str]:
        return [label(*c) for c in self.unseen]


def signal(waveform: str, speed: str, envelope: str, length: int, noise: float,
           rng: np.random.Generator) -> np.ndarray:
    """One (length,) signal of the combination."""
    t = np.linspace(0.0, 1.0, length, endpoint=False)
    cycles = CYCLES[speed] * rng.uniform(0.9, 1.1)
    phase = rng.uniform(0.0, 1.0)
    u = (cycles * t + phase) % 1.0  # position within the cycle, [0, 1)
    wave = {"sine": np.sin(2 * np.pi * u), "square": np.where(u < 0.5, 1.0, -1.0),
            "sawtooth": 2 * u - 1, "triangle": 1 - 4 * np.abs(u - 0.5)}[waveform]
    env = {"rising": 0.2 + 0.8 * t, "decaying": np.exp(-3.0 * t), "constant": np.full_like(t, 0.6)}[envelope]
    return (env * wave + noise * rng.normal(size=length)).astype(np.float32)


def make_described_signals(n_train: int = 20, n_test: int = 10, length: int = 128,
                           noise: float = 0.1, seed: int = 0) -> DescribedSignals:
    """``n_train`` training and ``n_test`` test signals per seen combination, ``n_test`` per
    unseen one; fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    combos = combinations()
    seen = [c for c in combos if not is_unseen(*c)]
    unseen = [c for c in combos if is_unseen(*c)]

    def draw(group: list[tuple[str, str, str]], n: int) -> tuple[np.ndarray, np.ndarray]:
        xs = [signal(*c, length, noise, rng) for c in group for _ in range(n)]
        ys = [label(*c) for c in group for _ in range(n)]
        return np.stack(xs)[:, None, :], np.asarray(ys)

    x_train, y_train = draw(seen, n_train)
    x_test, y_test = draw(seen, n_test)
    x_unseen, y_unseen = draw(unseen, n_test)
    return DescribedSignals(x_train, y_train, x_test, y_test, x_unseen, y_unseen, seen, unseen)


SIZES = {"small": 0.4, "medium": 1.0, "large": 2.5}  # amplitude factor of each size word


def caption(waveform: str, speed: str, envelope: str, size: str) -> str:
    """A sample's caption: its class sentence with its size word in front."""
    return f"a {size} {speed} {waveform} wave with {envelope} amplitude"


@dataclass
class CaptionedSignals(DescribedSignals):
    """DescribedSignals plus a caption per sample (``caption``), aligned with x and y."""

    text_train: np.ndarray | None = None
    text_test: np.ndarray | None = None
    text_unseen: np.ndarray | None = None


def make_captioned_signals(n_train: int = 20, n_test: int = 10, length: int = 128,
                           noise: float = 0.1, seed: int = 0) -> CaptionedSignals:
    """As :func:`make_described_signals` (same split of combinations), each sample scaled by a
    size drawn uniformly from ``SIZES`` and captioned with it; fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    combos = combinations()
    seen = [c for c in combos if not is_unseen(*c)]
    unseen = [c for c in combos if is_unseen(*c)]
    names = list(SIZES)

    def draw(group: list[tuple[str, str, str]], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xs, ys, texts = [], [], []
        for c in group:
            for _ in range(n):
                size = names[int(rng.integers(len(names)))]
                xs.append(SIZES[size] * signal(*c, length, noise, rng))
                ys.append(label(*c))
                texts.append(caption(*c, size))
        return np.stack(xs)[:, None, :].astype(np.float32), np.asarray(ys), np.asarray(texts)

    x_train, y_train, t_train = draw(seen, n_train)
    x_test, y_test, t_test = draw(seen, n_test)
    x_unseen, y_unseen, t_unseen = draw(unseen, n_test)
    return CaptionedSignals(x_train, y_train, x_test, y_test, x_unseen, y_unseen, seen, unseen,
                            t_train, t_test, t_unseen)
