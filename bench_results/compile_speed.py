"""torch.compile vs eager for the bare MiniLM training step (1 thread, process clock, median of N)."""
import time, statistics, sys, torch
from torch.nn import functional as F
from transmodal.models import ModelSpec, build_model
torch.set_num_threads(1); torch.manual_seed(0)
tokens, n = 32, 8
spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=[tokens], body="minilm", max_tokens=tokens)
x = torch.randn(16, 1, tokens); y = torch.randint(0, 2, (16,))
def steps(model, n, label):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ts = []
    for i in range(n + 1):
        t0 = time.process_time()
        loss = F.cross_entropy(model(x).float(), y); opt.zero_grad(); loss.backward(); opt.step()
        ts.append(time.process_time() - t0)
    print(f"{label}: first step {ts[0]:.2f} s, median of {n} {statistics.median(ts[1:]):.3f} s/step", flush=True)
    return statistics.median(ts[1:])
eager = build_model(spec).train()
e = steps(eager, n, "eager")
comp = build_model(spec).train()
c = steps(torch.compile(comp), n, "compiled (inductor)")
print(f"compiled/eager speed-up: {e / c:.2f}x")
