"""Frozen read-out: a random embedder (patch, or rocket fitted on the training inputs) + frozen
MiniLM, mean-pooled, standardised, logistic regression with C chosen by inner 3-fold CV on the
whole training split; test accuracy. PYTHONPATH=src python bench_results/rocket/frozen_probe.py SET ..."""
import sys, time, numpy as np, torch
from transmodal.models.model import ModelSpec, build_model
from transmodal.data.sources import load_dataset
from sklearn.linear_model import LogisticRegressionCV
from sklearn.preprocessing import StandardScaler
torch.set_num_threads(1)
def logreg(a, y, b, yt):
    sc = StandardScaler().fit(a)
    return LogisticRegressionCV(Cs=np.logspace(-4, 2, 7), cv=3, max_iter=3000).fit(sc.transform(a), y).score(sc.transform(b), yt)
for name in sys.argv[1:]:
    ds = load_dataset(f"ucr:{name}")
    x = torch.tensor(np.asarray(ds.x_train), dtype=torch.float32); xt = torch.tensor(np.asarray(ds.x_test), dtype=torch.float32)
    mu, sd = x.mean(dim=(0, 2), keepdim=True), x.std(dim=(0, 2), keepdim=True); x, xt = (x - mu) / sd, (xt - mu) / sd
    y = np.asarray(ds.y_train); classes = {v: i for i, v in enumerate(sorted(set(y)))}; y = np.array([classes[v] for v in y]); yt = np.array([classes[v] for v in ds.y_test])
    for kind in ("patch", "rocket"):
        torch.manual_seed(0)
        m = build_model(ModelSpec(task="classification", n_outputs=len(classes), in_channels=x.shape[1], spatial=list(x.shape[2:]), embedder=kind)).eval()
        m.embedder.fit_inputs(x.numpy())
        with torch.no_grad():
            f = torch.cat([m.features(b)[0].mean(1) for b in x.split(64)]).numpy(); ft = torch.cat([m.features(b)[0].mean(1) for b in xt.split(64)]).numpy()
        print(name, kind, "frozen probe %.3f" % logreg(f, y, ft, yt), flush=True)
