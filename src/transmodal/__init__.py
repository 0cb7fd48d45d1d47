"""transmodal: fine-tune pretrained transformers on tasks of other modalities.

    import transmodal
    run = transmodal.fit("ucr:GunPoint", out="runs/gunpoint")
    run.summary["metrics"]["test"]
    again = transmodal.load("runs/gunpoint")
    again.predict(x_new)
"""

from .config import FitConfig
from .errors import CheckpointError, ConfigError, DataError, TransmodalError
from .run import Run, fit, load

__version__ = "0.1.0"

__all__ = ["fit", "load", "Run", "FitConfig", "TransmodalError", "DataError", "ConfigError",
           "CheckpointError", "TransmodalClassifier", "TransmodalRegressor"]


def __getattr__(name: str):
    # The scikit-learn estimators import sklearn; load them only when asked for.
    if name in ("TransmodalClassifier", "TransmodalRegressor"):
        from .run import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'transmodal' has no attribute {name!r}")
