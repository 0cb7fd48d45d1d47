"""Probe-alone test accuracy per C and the C that inner 3-fold CV picks by log loss vs accuracy
(features: random embedder seed 0 + MiniLM, mean-pooled, standardised; 80% of train as fit does)."""
import sys, time, numpy as np, torch
from transmodal.models.model import ModelSpec, build_model
from transmodal.data.sources import load_dataset
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.preprocessing import StandardScaler
torch.set_num_threads(1)
CS = np.logspace(-4, 2, 7)
for name in sys.argv[1:]:
    t = time.time(); ds = load_dataset(f"ucr:{name}")
    x = torch.tensor(np.asarray(ds.x_train), dtype=torch.float32); xt = torch.tensor(np.asarray(ds.x_test), dtype=torch.float32)
    mu, sd = x.mean(dim=(0, 2), keepdim=True), x.std(dim=(0, 2), keepdim=True); x, xt = (x - mu) / sd, (xt - mu) / sd
    y = np.asarray(ds.y_train); classes = {v: i for i, v in enumerate(sorted(set(y)))}; y = np.array([classes[v] for v in y]); yt = np.array([classes[v] for v in ds.y_test])
    torch.manual_seed(0)
    m = build_model(ModelSpec(task="classification", n_outputs=len(classes), in_channels=x.shape[1], spatial=list(x.shape[2:]))).eval()
    with torch.no_grad():
        f = torch.cat([m.features(b)[0].mean(1) for b in x.split(64)]).numpy(); ft = torch.cat([m.features(b)[0].mean(1) for b in xt.split(64)]).numpy()
    idx = np.arange(len(y)); tr, va = train_test_split(idx, test_size=0.2, stratify=y, random_state=0)
    sc = StandardScaler().fit(f[tr]); a, b, c = sc.transform(f[tr]), sc.transform(f[va]), sc.transform(ft)
    rows = []
    for C in CS:
        clf = LogisticRegression(C=C, max_iter=3000)
        cv = StratifiedKFold(min(3, np.bincount(y[tr]).min()))
        ll = cross_val_score(clf, a, y[tr], cv=cv, scoring="neg_log_loss").mean(); acc = cross_val_score(clf, a, y[tr], cv=cv).mean()
        clf.fit(a, y[tr]); rows.append((C, ll, acc, clf.score(b, y[va]), clf.score(c, yt)))
    bl = max(rows, key=lambda r: r[1]); ba = max(rows, key=lambda r: (r[2], -r[0]))
    for r in rows: print(name, "C=%g cv_logloss=%.3f cv_acc=%.3f val=%.3f test=%.3f" % r)
    print(name, "picked by logloss C=%g test=%.3f | by acc C=%g test=%.3f  %.0fs" % (bl[0], bl[4], ba[0], ba[4], time.time() - t), flush=True)
