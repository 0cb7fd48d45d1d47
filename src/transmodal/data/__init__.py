"""Data in: sources (npz, csv, ucr, image folders), array rules, the validation split, the
preprocessing stored with a model, and generated sets (PDE)."""

from .arrays import as_inputs, check_xy, resample_to
from .preprocess import Preprocessor
from .sources import Dataset, bundled_ucr_names, load_dataset, read_npz
from .split import split_train_val

__all__ = ["Dataset", "load_dataset", "read_npz", "bundled_ucr_names", "as_inputs", "check_xy",
           "resample_to", "split_train_val", "Preprocessor"]
