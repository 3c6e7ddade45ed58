"""NumPy reference forward pass of the DeepSeek decoder (see `deepseek.py`)."""

from .deepseek import Model, forward
from .weights import RowSource, TensorSource, Weights

__all__ = ["Model", "forward", "RowSource", "TensorSource", "Weights"]
