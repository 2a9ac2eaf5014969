"""Image folders (one sub-folder per class, as torchvision's ImageFolder), decoded lazily.

Preprocessing, in this order, per image (torchvision's evaluation transforms
``Resize(S), CenterCrop(H, W), ToTensor(), Normalize(mean, std)`` are ``resize_shorter=S,
crop=(H, W), scale=1/255, mean, std``):

1. decode with Pillow and convert to grayscale (1 channel) or RGB (3 channels);
2. resize: to exactly ``size`` = (H, W), or the shorter side to ``resize_shorter`` keeping
   the aspect ratio (the longer side rounded down, as torchvision), bilinear (Pillow's,
   antialiased, as torchvision's on PIL images), if the size differs;
3. center crop to ``crop`` = (H, W) (the offsets rounded as torchvision's ``CenterCrop``);
4. multiply by ``scale`` (an exact fraction, default 1/255: 8-bit pixels -> [0, 1]);
5. reverse the channels if ``channel_order`` is BGR;
6. subtract ``mean`` and divide by ``std`` (one value, or one per channel, in the final order);
7. lay out as NCHW or NHWC; cast to float32 (the arithmetic above runs in float64).

Class folders are searched recursively for images. Labels are the sorted class folder names
(0, 1, ...) or come from a classes file. Channels and size left open are taken from the
model's input (:meth:`ImageOptions.fit`).
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm"}


@dataclass(frozen=True)
class ImageOptions:
    """How to turn image files into model inputs (see the module docstring for the order).

    ``classes``: a file naming the class folders' labels (:func:`read_classes`);
    ``skip_bad``: skip files that do not decode (counted in a warning) instead of refusing
    the data; ``num_classes``: the model's, to check the folders' labels against.
    """

    size: tuple[int, int] | None = None
    scale: Fraction = Fraction(1, 255)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"
    channel_order: str = "RGB"
    channels: int | None = None
    resize_shorter: int | None = None
    crop: tuple[int, int] | None = None
    classes: str | None = None
    skip_bad: bool = False
    num_classes: int | None = None

    @property
    def out_size(self) -> tuple[int, int] | None:
        """(H, W) of a preprocessed image."""
        return self.crop or (None if self.resize_shorter else self.size)

    def fit(self, input_shape, num_classes: int | None = None) -> ImageOptions:
        """Fill ``channels`` and ``size`` (unless resizing the shorter side or cropping) from a
        model input shape (N, C, H, W) or (N, H, W, C), and ``num_classes``."""
        out = self if num_classes is None else replace(self, num_classes=num_classes)
        dims = list(input_shape)[1:]
        if len(dims) != 3:
            return out
        c, h, w = (dims[0], dims[1], dims[2]) if self.layout == "NCHW" else (dims[2], dims[0],
                                                                              dims[1])
        known = [isinstance(d, int) and d > 0 for d in (c, h, w)]
        if out.channels is None and known[0]:
            out = replace(out, channels=c)
        if (out.size is None and out.resize_shorter is None and out.crop is None and known[1]
                and known[2]):
            out = replace(out, size=(h, w))
        return out


def read_classes(path: str | Path) -> dict[str, int]:
    """Class folder name -> label from a classes file: JSON (``{"name": label}`` or a list of
    names, label = position) or text, one class per line, ``NAME`` (label = line number,
    counting non-empty lines from 0) or ``NAME LABEL``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read --classes {p}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except ValueError:
            raise DataError(f"--classes {p.name}: not JSON") from None
        pairs = list(doc.items()) if isinstance(doc, dict) else \
            [(name, i) for i, name in enumerate(doc)] if isinstance(doc, list) else None
        if pairs is None or not all(isinstance(n, str) and type(i) is int for n, i in pairs):
            raise DataError(f"--classes {p.name}: expected {{\"folder\": label, ...}} or "
                            "[\"folder\", ...]")
    else:
        lines = [ln.split() for ln in text.splitlines() if ln.strip()]
        try:
            pairs = [(f[0], int(f[1]) if len(f) == 2 else i) for i, f in enumerate(lines)
                     if len(f) <= 2]
        except ValueError:
            pairs = []
        if len(pairs) != len(lines):
            raise DataError(f"--classes {p.name}: expected one 'FOLDER' or 'FOLDER LABEL' per "
                            "line")
    mapping = dict(pairs)
    if not mapping or len(mapping) != len(pairs) or min(mapping.values()) < 0:
        raise DataError(f"--classes {p.name}: needs distinct folder names with labels >= 0")
    return mapping


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

    Class folders are the root's sub-folders; their labels are the sorted names' positions or
    come from ``options.classes``. Images are searched recursively in each class folder and
    sorted by path. Indexing (a slice or an integer array) decodes only those images.
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
        if o.resize_shorter and o.size:
            raise DataError("give --resize H W or --resize-shorter S, not both")
        if o.resize_shorter and not o.crop:
            raise DataError("--resize-shorter keeps each image's aspect ratio: add "
                            "--center-crop H W so that all images have one size")
        if o.out_size is None:
            raise DataError(f"{self.root.name}: the model input has no fixed height and width; "
                            "give --resize H W (or --resize-shorter S --center-crop H W)")
        self.mean = self._per_channel(o.mean, "mean", 0.0)
        self.std = self._per_channel(o.std, "std", 1.0)
        if np.any(self.std <= 0):
            raise DataError("--std values must be positive")
        self.classes = sorted(d.name for d in self.root.iterdir()
                              if d.is_dir() and not d.name.startswith("."))
        if not self.classes:
            raise DataError(f"{self.root.name}: no class sub-folders (expected ROOT/CLASS/IMAGE)")
        labels = self._labels()
        self.files: list[Path] = []
        targets = []
        for cls in self.classes:
            files = sorted(f for f in (self.root / cls).rglob("*")
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in
                                       f.relative_to(self.root).parts))
            self.files += files
            targets += [labels[cls]] * len(files)
        if not self.files:
            raise DataError(f"{self.root.name}: no image files in its class sub-folders")
        self.targets = np.asarray(targets, np.int64)
        if o.skip_bad:
            self._skip_bad()
        h, w = o.out_size
        c = o.channels
        n = len(self.files)
        self.shape = (n, c, h, w) if o.layout == "NCHW" else (n, h, w, c)
        self.dtype = np.dtype(np.float32)
        self.ndim = 4

    def _labels(self) -> dict[str, int]:
        """Class folder -> label, checked against the model's number of classes."""
        o, name, n = self.options, self.root.name, len(self.classes)
        if o.classes is None:
            hint = ("give --classes FILE (one folder name per line, in the model's label "
                    "order) so that each keeps its label")
            if o.num_classes is not None and n > o.num_classes:
                raise DataError(f"{name} has {n} class folders, the model {o.num_classes} "
                                f"classes: {hint}")
            if o.num_classes is not None and n < o.num_classes:
                log.warning("%s has %d class folders, the model %d classes: the sorted folder "
                            "names are taken as labels 0..%d, right only if they are the "
                            "model's first classes in that order; otherwise %s", name, n,
                            o.num_classes, n - 1, hint)
            return {cls: i for i, cls in enumerate(self.classes)}
        mapping = read_classes(o.classes)
        missing = [c for c in self.classes if c not in mapping]
        if missing:
            raise DataError(f"{name}: class folder {missing[0]!r} is not in --classes "
                            f"{Path(o.classes).name}")
        top = max(mapping.values())
        if o.num_classes is not None and top >= o.num_classes:
            raise DataError(f"--classes {Path(o.classes).name} gives label {top}, the model has "
                            f"{o.num_classes} classes (0..{o.num_classes - 1})")
        return {c: mapping[c] for c in self.classes}

    def _skip_bad(self) -> None:
        """Drop the files that do not decode, with a warning that counts them."""
        bad = [i for i, f in enumerate(self.files) if _decode_error(str(f), *_stamp(f))]
        if not bad:
            return
        first = self.files[bad[0]]
        log.warning("%s: skipped %d of %d image files that do not decode (first: %s: %s)",
                    self.root.name, len(bad), len(self.files), first.relative_to(self.root),
                    _decode_error(str(first), *_stamp(first)))
        keep = np.setdiff1d(np.arange(len(self.files)), bad)
        self.files = [self.files[i] for i in keep]
        self.targets = self.targets[keep]
        if not self.files:
            raise DataError(f"{self.root.name}: no image file decodes")

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
            with _open(path) as im:
                # 16-bit and float grayscale keep their range (as float); all else -> L / RGB
                wide = o.channels == 1 and im.mode.startswith(("I", "F"))
                im = im.convert("F" if wide else "L" if o.channels == 1 else "RGB")
                size = resized(im.size, o)
                if im.size != size:
                    im = im.resize(size, Image.BILINEAR)
                if o.crop:
                    im = im.crop(crop_box(im.size, o.crop))
                a = np.asarray(im, np.float64)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"image {path} is too large to decode safely ({exc})") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image {path}: {exc} (--skip-bad skips such files)") \
                from None
        a = a.reshape(a.shape[0], a.shape[1], -1) * o.scale.numerator / o.scale.denominator
        if o.channel_order == "BGR":
            a = a[..., ::-1]
        a = (a - self.mean) / self.std
        if o.layout == "NCHW":
            a = a.transpose(2, 0, 1)
        return a.astype(np.float32)


def resized(size: tuple[int, int], o: ImageOptions) -> tuple[int, int]:
    """The (width, height) an image of ``size`` (width, height) is resized to."""
    w, h = size
    if o.resize_shorter:
        s = o.resize_shorter
        return (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
    return (o.size[1], o.size[0]) if o.size else (w, h)


def crop_box(size: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pillow's (left, top, right, bottom) of torchvision's ``CenterCrop(crop)`` of an image
    of ``size`` (width, height); outside the image Pillow fills zeros, as torchvision pads."""
    (w, h), (ch, cw) = size, crop
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return left, top, left + cw, top + ch


def _open(path: Path):
    """The decoded image at ``path`` (Pillow's damaged-metadata warnings silenced; over its
    ~89 MP warning limit, refused as a decompression bomb)."""
    Image = _pillow()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(path)
        try:
            im.load()
        except BaseException:
            im.close()
            raise
    return im


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=1 << 20)
def _decode_error(path: str, size: int, mtime_ns: int) -> str | None:
    """Why the file does not decode, or None (cached per file version: the folder is opened
    for its fingerprint and again for the run)."""
    del size, mtime_ns  # cache key only
    Image = _pillow()
    try:
        _open(Path(path)).close()
    except (OSError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
