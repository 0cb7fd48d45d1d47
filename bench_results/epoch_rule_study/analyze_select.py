import json, sys, statistics as st
rows=[json.loads(l) for l in open(sys.argv[1])]
def pick(eps, rule):
    if rule=="current":  # max val acc, ties -> lower val loss, then earliest
        return min(eps, key=lambda e:(-e["val_accuracy"], e["val_loss"], e["epoch"]))
    if rule=="val_loss":
        return min(eps, key=lambda e:(e["val_loss"], e["epoch"]))
    if rule=="last":
        return eps[-1]
    if rule=="acc_then_latest":
        return min(eps, key=lambda e:(-e["val_accuracy"], -e["epoch"]))
    if rule=="smooth3":  # val acc moving average of 3 (centred), ties -> lower loss
        n=len(eps); sm=[]
        for i in range(n):
            w=eps[max(0,i-1):i+2]; sm.append(sum(x["val_accuracy"] for x in w)/len(w))
        i=min(range(n), key=lambda i:(-sm[i], eps[i]["val_loss"]))
        return eps[i]
    if rule=="oracle":
        return max(eps, key=lambda e:e["test_accuracy"])
rules=["current","val_loss","last","acc_then_latest","smooth3","oracle"]
sets=list(dict.fromkeys(r["set"] for r in rows))
print("| set | "+" | ".join(rules)+" |"); print("|---"*(len(rules)+1)+"|")
means={k:[] for k in rules}
for s in sets:
    rs=[r for r in rows if r["set"]==s]
    cells=[]
    for k in rules:
        v=[pick(r["epochs"],k)["test_accuracy"] for r in rs]; means[k].append(st.mean(v))
        cells.append(f"{st.mean(v):.3f} ± {st.stdev(v) if len(v)>1 else 0:.3f}")
    print(f"| {s} ({len(rs)} seeds) | "+" | ".join(cells)+" |")
print("| mean | "+" | ".join(f"{st.mean(means[k]):.3f}" for k in rules)+" |")
for r in rows: assert abs(pick(r["epochs"],"current")["test_accuracy"]-r["chosen_test"])<1e-9 or print("mismatch", r["set"], r["seed"], r["chosen_test"], pick(r["epochs"],"current")["epoch"], r["best_epoch"])
