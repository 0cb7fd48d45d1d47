"""User-facing errors: one clear line saying what is wrong and how to fix it.

The CLI prints ``str(error)`` without a traceback for these; anything else is a bug and
keeps its traceback.
"""


class TransmodalError(ValueError):
    """Bad input, configuration or file: the message says what and how to fix it."""


class DataError(TransmodalError):
    """The data given to fit/predict cannot be used as it is."""


class ConfigError(TransmodalError):
    """An option or combination of options is not valid."""


class CheckpointError(TransmodalError):
    """A run folder, model file or checkpoint cannot be read safely."""


class ResourceError(TransmodalError):
    """The machine ran out of memory; the message names the option that lowers it."""


def is_oom(e: BaseException) -> bool:
    """Out of memory on any device: torch.OutOfMemoryError (CUDA), the CPU allocator's
    RuntimeError ("DefaultCPUAllocator: can't allocate memory"), or Python's MemoryError."""
    text = str(e).lower()
    return isinstance(e, MemoryError) or "out of memory" in text or "can't allocate memory" in text
