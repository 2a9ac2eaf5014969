"""Data sources: yield validated ``(x, y)`` batches for a model's head."""

from .arrays import ArrayDataset, load_npz, load_npy_pair

__all__ = ["ArrayDataset", "load_npz", "load_npy_pair"]
