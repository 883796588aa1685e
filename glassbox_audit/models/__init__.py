"""Model stage: the Attention U-Net builder, losses, training and the hash-keyed model store."""

from .registry import StoredModel, find_model, latest_by_name, load_model, model_key, save_model
from .train import obtain_models

__all__ = ["StoredModel", "find_model", "latest_by_name", "load_model", "model_key", "obtain_models", "save_model"]
