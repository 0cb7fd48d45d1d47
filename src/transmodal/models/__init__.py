"""Models: input module (embedder) -> pretrained body (registered families) -> head (registered)."""

from .model import ModelSpec, TransmodalModel, build_model, load_model, save_model

__all__ = ["ModelSpec", "TransmodalModel", "build_model", "load_model", "save_model"]
