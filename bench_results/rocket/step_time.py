"""Training step time, patch vs rocket tokens (MiniLM, batch 16, forward + backward + AdamW),
interleaved, median of N steps per kind; prints the ratio. PYTHONPATH=src python
bench_results/rocket/step_time.py [LENGTH ...] (default: 251 = ArrowHead, 427 = OSULeaf)."""
import statistics
import sys
import time

import numpy as np
import torch

from transmodal.models.model import ModelSpec, build_model

torch.set_num_threads(1)
N = 15
for length in [int(a) for a in sys.argv[1:]] or [251, 427]:
    x = torch.randn(16, 1, length)
    y = torch.randint(0, 3, (16,))
    models, opts, times = {}, {}, {"patch": [], "rocket": []}
    for kind in times:
        torch.manual_seed(0)
        m = build_model(ModelSpec(task="classification", n_outputs=3, in_channels=1,
                                  spatial=[length], embedder=kind)).train()
        m.embedder.fit_inputs(np.random.default_rng(0).normal(size=(32, 1, length)).astype(np.float32))
        models[kind], opts[kind] = m, torch.optim.AdamW(m.parameters(), 1e-4)
    for i in range(N + 2):
        for kind, m in models.items():
            t = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opts[kind].step()
            opts[kind].zero_grad()
            if i >= 2:  # warm-up steps
                times[kind].append(time.perf_counter() - t)
    p, r = statistics.median(times["patch"]), statistics.median(times["rocket"])
    print(f"| {length} | {p:.3f} | {r:.3f} | {r / p:.2f}x |", flush=True)
