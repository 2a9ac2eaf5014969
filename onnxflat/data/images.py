"""Image folders (one sub-folder per class, as torchvision's ImageFolder), decoded lazily.

Preprocessing, in this order, per image:

1. decode with Pillow and convert to grayscale (1 channel) or RGB (3 channels);
2. resize to exactly ``size`` = (H, W) with bilinear filtering (no crop), if it differs;
3. multiply by ``scale`` (an exact fraction, default 1/255: 8-bit pixels -> [0, 1]);
4. reverse the channels if ``channel_order`` is BGR;
5. subtract ``mean`` and divide by ``std`` (one value, or one per channel, in the final order);
6. lay out as NCHW or NHWC; cast to float32 (the arithmetic above runs in float64).

Channels and size left open are taken from the model's input (:meth:`ImageOptions.fit`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm"}


@dataclass(frozen=True)
class ImageOptions:
    """How to turn image files into model inputs (see the module docstring for the order)."""

    size: tuple[int, int] | None = None
    scale: Fraction = Fraction(1, 255)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"
    channel_order: str = "RGB"
    channels: int | None = None

    def fit(self, input_shape) -> ImageOptions:
        """Fill ``channels`` and ``size`` from a model input shape (N, C, H, W) or (N, H, W, C)."""
        dims = list(input_shape)[1:]
        if len(dims) != 3:
            return self
        c, h, w = (dims[0], dims[1], dims[2]) if self.layout == "NCHW" else (dims[2], dims[0],
                                                                              dims[1])
        known = [isinstance(d, int) and d > 0 for d in (c, h, w)]
        out = self
        if out.channels is None and known[0]:
            out = replace(out, channels=c)
        if out.size is None and known[1] and known[2]:
            out = replace(out, size=(h, w))
        return out


def parse_scale(text: str) -> Fraction:
    """'1/255', '0.5' or '2' -> an exact fraction (8-bit pixels scale without rounding drift)."""
    try:
        value = Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        raise DataError(f"--scale: expected a number or a fraction like 1/255, got {text!r}") \
            from None
    if value <= 0:
        raise DataError(f"--scale must be positive, got {text}")
    return value


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading an image folder needs Pillow: pip install 'onnxflat[images]'") \
            from None
    return Image


class ImageFolder:
    """Array-like view ``(N, C, H, W)`` or ``(N, H, W, C)`` float32 of an image folder.

    Class names are the sorted sub-folder names (label i = i-th name); files are sorted
    within each class. Indexing (a slice or an integer array) decodes only those images.
    """

    def __init__(self, root: str | Path, options: ImageOptions):
        self.root = Path(root)
        self.options = o = options
        if o.layout not in ("NCHW", "NHWC"):
            raise DataError(f"layout must be NCHW or NHWC, got {o.layout}")
        if o.channel_order not in ("RGB", "BGR"):
            raise DataError(f"channel order must be RGB or BGR, got {o.channel_order}")
        if o.channels not in (1, 3):
            hint = {"NCHW": " (an NHWC model? give --layout NHWC)",
                    "NHWC": " (an NCHW model? drop --layout NHWC)"}[o.layout]
            raise DataError(f"{self.root.name}: images are read as 1 (grayscale) or 3 (RGB) "
                            f"channels; the model wants {o.channels or 'an unknown number'}"
                            + (hint if o.channels else ""))
        if o.size is None:
            raise DataError(f"{self.root.name}: the model input has no fixed height and width; "
                            "give --resize H W")
        self.mean = self._per_channel(o.mean, "mean", 0.0)
        self.std = self._per_channel(o.std, "std", 1.0)
        if np.any(self.std <= 0):
            raise DataError("--std values must be positive")
        self.classes = sorted(d.name for d in self.root.iterdir()
                              if d.is_dir() and not d.name.startswith("."))
        if not self.classes:
            raise DataError(f"{self.root.name}: no class sub-folders (expected ROOT/CLASS/IMAGE)")
        self.files: list[Path] = []
        targets = []
        for label, cls in enumerate(self.classes):
            files = sorted(f for f in (self.root / cls).iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            self.files += files
            targets += [label] * len(files)
        if not self.files:
            raise DataError(f"{self.root.name}: no image files in its class sub-folders")
        self.targets = np.asarray(targets, np.int64)
        h, w = o.size
        c = o.channels
        n = len(self.files)
        self.shape = (n, c, h, w) if o.layout == "NCHW" else (n, h, w, c)
        self.dtype = np.dtype(np.float32)
        self.ndim = 4

    def _per_channel(self, values, what: str, default: float) -> np.ndarray:
        if values is None:
            return np.full(1, default)
        v = np.asarray(values, np.float64)
        if len(v) not in (1, self.options.channels):
            raise DataError(f"--{what} takes 1 or {self.options.channels} values, got {len(v)}")
        return v

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key) -> np.ndarray:
        rows = range(len(self.files))[key] if isinstance(key, slice) else np.asarray(key).ravel()
        return np.stack([self.load(int(i)) for i in rows]) if len(rows) else \
            np.zeros((0,) + self.shape[1:], np.float32)

    def load(self, i: int) -> np.ndarray:
        """Sample i, preprocessed, shape ``self.shape[1:]``."""
        Image = _pillow()
        o = self.options
        path = self.files[i]
        try:
            with warnings.catch_warnings():
                # Pillow's warnings on damaged metadata it skips are noise (the pixels decode
                # or fail); over its ~89 MP warning limit, refused as a decompression bomb.
                warnings.simplefilter("ignore")
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(path)
                im.load()
            with im:
                # 16-bit and float grayscale keep their range (as float); all else -> L / RGB
                wide = o.channels == 1 and im.mode.startswith(("I", "F"))
                im = im.convert("F" if wide else "L" if o.channels == 1 else "RGB")
                h, w = o.size
                if im.size != (w, h):
                    im = im.resize((w, h), Image.BILINEAR)
                a = np.asarray(im, np.float64)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"image {path} is too large to decode safely ({exc})") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
        a = a.reshape(a.shape[0], a.shape[1], -1) * o.scale.numerator / o.scale.denominator
        if o.channel_order == "BGR":
            a = a[..., ::-1]
        a = (a - self.mean) / self.std
        if o.layout == "NCHW":
            a = a.transpose(2, 0, 1)
        return a.astype(np.float32)
