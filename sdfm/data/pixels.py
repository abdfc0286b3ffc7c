"""Bring a decoded image of any PIL mode to 8-bit grey ("L") or RGB, scaling its value range.

PIL's own ``convert("L")`` clips instead of scaling: a 16-bit grey PNG (mode ``I;16``, values
0..65535) would keep 255 for every pixel above 255. Here each mode is mapped from its nominal
range to 0..255:

- ``I;16`` / ``I;16B`` / ``I;16L`` / ``I;16N`` (16-bit grey) and ``I`` (32-bit integers, as PIL
  reads 16-bit TIFFs): ``u8 = round(v * 255 / 65535) = round(v / 257)``; ``I`` values outside
  0..65535 have no defined range and are refused.
- ``F`` (32-bit float): the range [0, 1], ``u8 = round(255 v)``; values outside it, NaN or inf
  are refused.
- ``LAB`` (CIELAB, from TIFF): converted to sRGB through a colour transform (ImageCms).
- ``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ``HSV`` and the alpha modes (``LA``, ``La``,
  ``PA``, ``RGBA``, ``RGBa``): PIL's conversion, which is exact for 8-bit data; alpha is dropped
  (a premultiplied ``La`` / ``RGBa`` is first un-premultiplied).
"""

from __future__ import annotations

import numpy as np

from sdfm.data.dataset import DataError

__all__ = ["SIXTEEN_BIT_MODES", "to_8bit"]

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
#: Modes PIL converts to L / RGB exactly (8 bits per channel, or a palette of 8-bit colours).
_EIGHT_BIT_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV", "LA", "PA", "RGBA")


def _grey_from_array(values: np.ndarray, scale: float) -> "Image.Image":
    from PIL import Image

    return Image.fromarray(np.rint(values * scale).clip(0, 255).astype(np.uint8), mode="L")


def _wide_grey(image, source: str) -> "Image.Image":
    """An ``I;16*``, ``I`` or ``F`` image as 8-bit grey, its nominal range mapped to 0..255."""
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
            raise DataError(f"{source}: a 32-bit float image (mode F) with values outside [0, 1]; "
                            f"save it as an 8- or 16-bit PNG")
        return _grey_from_array(values, 255.0)
    values = np.asarray(image, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise DataError(f"{source}: a 32-bit integer image (mode I) with values {values.min()}..{values.max()}, "
                        f"outside the 16-bit range 0..65535; save it as an 8- or 16-bit PNG")
    return _grey_from_array(values, 255.0 / 65535.0)


def to_8bit(image, channels: int, source: str) -> "Image.Image":
    """``image`` as mode "L" (``channels`` 1) or "RGB" (``channels`` 3), each mode's range scaled to 0..255.

    Args:
        image: a decoded PIL image of any mode.
        channels: 1 for grey, 3 for RGB.
        source: the file it came from, named in errors.

    Raises:
        DataError: a mode without a defined conversion, or values outside the mode's range.
    """
    target = "L" if channels == 1 else "RGB"
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return _wide_grey(image, source).convert(target)
    if mode in ("La", "RGBa"):
        image = image.convert("LA" if mode == "La" else "RGBA")
        mode = image.mode
    if mode == "LAB":
        from PIL import ImageCms

        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                            "LAB", "RGB")
        return ImageCms.applyTransform(image, transform).convert(target)
    if mode not in _EIGHT_BIT_MODES:
        raise DataError(f"{source}: images of PIL mode {mode!r} are not supported; save it as an 8- or 16-bit PNG")
    return image.convert(target)
