"""The suite's data sets: five UCR/UEA sets, digits, Burgers, or any ``--data`` spec.

- **data**: five UCR/UEA sets bundled with aeon on their default train/test split
  (ArrowHead, GunPoint, ItalyPowerDemand, OSULeaf, BasicMotions [multivariate, 6 channels]),
  scikit-learn's digits as 8x8 one-channel images, split once into halves, stratified,
  ``random_state=0`` (``DIGITS_SPLIT``), and the generated viscous-Burgers task of
  :func:`transmodal.pde.make_burgers` (u0 -> u(T), 256 train / 128 test on 128 points,
  seed 0; dense, scored by relative L2, lower is better). ``--data SPEC`` (repeatable) runs the
  same comparison on any dataset spec that ``transmodal fit`` accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transmodal.bench.suite_plan import DEFAULT_BUDGET, SUITE_BUDGETS, Budget

UCR_SETS = ("ArrowHead", "GunPoint", "ItalyPowerDemand", "OSULeaf", "BasicMotions")
SUITE_SETS = UCR_SETS + ("digits", "burgers")
QUICK_SETS = ("GunPoint", "ItalyPowerDemand")

DIGITS_SPLIT = dict(test_size=0.5, random_state=0)  # stratified on the label
BURGERS_TASK = dict(n_train=256, n_test=128, grid=128, t_final=1.0, viscosity=0.1, seed=0)
USER_TEST_SPLIT = dict(test_size=0.3, random_state=0)  # only for --data without a test split


@dataclass
class SuiteData:
    name: str
    dataset: Any  # transmodal.data.Dataset with a test split
    task: str
    budget: Budget
    note: str = ""

    @property
    def is_ucr(self) -> bool:
        return self.name in UCR_SETS


def load_suite_dataset(name: str) -> SuiteData:
    """A suite data set by name (``UCR_SETS``, ``digits``, ``burgers``) or a user spec."""
    from transmodal.data import Dataset, load_dataset
    from transmodal.tasks import get_task, infer_task

    note = ""
    if name in UCR_SETS:
        ds = load_dataset(f"ucr:{name}")
        budget = SUITE_BUDGETS[name]
    elif name == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x = x.reshape(-1, 1, 8, 8).astype(np.float32)  # (N, 1, 8, 8) grey levels 0..16
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, stratify=y, **DIGITS_SPLIT)
        ds = Dataset(x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), name="digits")
        budget = SUITE_BUDGETS[name]
        note = "sklearn load_digits, stratified 50/50 split, random_state=0"
    elif name == "burgers":
        from transmodal.data.pde import make_burgers

        task = make_burgers(**BURGERS_TASK)
        ds = Dataset(task.x_train, task.y_train, task.x_test, task.y_test, name="burgers")
        budget = SUITE_BUDGETS[name]
        note = "viscous Burgers u0 -> u(T=1), nu=0.1, 128 points, seed 0; relative L2"
    else:
        ds = load_dataset(name)
        short = name.split(":", 1)[1] if name.startswith("ucr:") else Path(name).stem or name
        ds.name = short
        budget = SUITE_BUDGETS.get(short, DEFAULT_BUDGET)
        if ds.x_test is None:
            from sklearn.model_selection import train_test_split

            strat = get_task(infer_task(ds.x_train, ds.y_train)).stratify(ds.y_train)
            x_tr, x_te, y_tr, y_te = train_test_split(ds.x_train, ds.y_train, stratify=strat,
                                                      **USER_TEST_SPLIT)
            ds = Dataset(x_tr, y_tr, x_te, y_te, name=ds.name, variable_length=ds.variable_length)
            note = "no test split given: 30% held out (stratified for labels), random_state=0"
        name = short
    task = infer_task(ds.x_train, ds.y_train)
    return SuiteData(name=name, dataset=ds, task=task, budget=budget, note=note)
