"""Data sources: yield validated ``(x, y)`` batches for a model's head."""

from .arrays import ArrayDataset, load_npy_pair, load_npz
from .images import ImageFolder, ImageOptions
from .spec import DataSpec, open_data, random_subset

__all__ = ["ArrayDataset", "load_npz", "load_npy_pair", "ImageFolder", "ImageOptions",
           "DataSpec", "open_data", "random_subset"]
