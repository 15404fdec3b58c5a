"""Models: the native Llama-family transformer, loaders (GGUF, HF directory), the adapter."""

from specdec.models.llama import LlamaModel, ModelOutput
from specdec.models.loader import LoadedModel, load_model

__all__ = ["LlamaModel", "LoadedModel", "ModelOutput", "load_model"]
