"""Every PIL mode an image file can hold is read with its value range scaled to 0..255 (sdfm.data.pixels)."""

from __future__ import annotations

import struct
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from sdfm.data import DataError
from sdfm.data.folder import read_image
from sdfm.data.pixels import to_8bit

SIDE = 4  # read at the file's own size: ImageOps.fit does not resample


def _read(path, channels=3):
    array = read_image(path, SIDE, channels)
    return array[0] if channels == 1 else array.transpose(1, 2, 0)


def _sixteen_bit_values():
    """16 values over the whole 16-bit range, most of them above 255 (PIL's convert would clip them)."""
    return np.array([0, 1, 128, 129, 255, 256, 257, 1000, 5000, 20000, 32767, 32768, 40000, 60000, 65534, 65535],
                    dtype=np.uint16).reshape(SIDE, SIDE)


def _by_257(values):
    return np.rint(values.astype(np.float64) / 257.0).astype(np.uint8)


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path):
    values = _sixteen_bit_values()
    Image.fromarray(values).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "I;16"
    grey = _read(tmp_path / "a.png", channels=1)
    np.testing.assert_array_equal(grey, _by_257(values))
    np.testing.assert_array_equal(_read(tmp_path / "a.png"), np.repeat(_by_257(values)[..., None], 3, axis=2))


def test_big_endian_sixteen_bit_tiff(tmp_path):
    values = _sixteen_bit_values()
    Image.frombytes("I;16B", (SIDE, SIDE), values.astype(">u2").tobytes()).save(tmp_path / "a.tif")
    assert Image.open(tmp_path / "a.tif").mode == "I;16B"
    np.testing.assert_array_equal(_read(tmp_path / "a.tif", channels=1), _by_257(values))


def test_32_bit_integer_tiff_is_read_in_the_16_bit_range(tmp_path):
    values = _sixteen_bit_values().astype(np.int32)
    Image.fromarray(values, mode="I").save(tmp_path / "a.tif")
    assert Image.open(tmp_path / "a.tif").mode == "I"
    np.testing.assert_array_equal(_read(tmp_path / "a.tif", channels=1), _by_257(values))
    Image.fromarray(values * 2, mode="I").save(tmp_path / "b.tif")
    with pytest.raises(DataError, match=r"b\.tif: .*mode I.*0\.\.131070.*16-bit PNG"):
        _read(tmp_path / "b.tif", channels=1)


def test_float_tiff_is_read_in_the_unit_range(tmp_path):
    values = np.linspace(0.0, 1.0, SIDE * SIDE, dtype=np.float32).reshape(SIDE, SIDE)
    Image.fromarray(values, mode="F").save(tmp_path / "a.tif")
    assert Image.open(tmp_path / "a.tif").mode == "F"
    expected = np.rint(values.astype(np.float64) * 255).astype(np.uint8)
    np.testing.assert_array_equal(_read(tmp_path / "a.tif", channels=1), expected)
    Image.fromarray(values * 255, mode="F").save(tmp_path / "b.tif")
    with pytest.raises(DataError, match=r"b\.tif: .*mode F.*outside \[0, 1\]"):
        _read(tmp_path / "b.tif")


def _png_rgb48(path, pixels: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG written chunk by chunk (PIL cannot write one)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def test_sixteen_bit_rgb_png_keeps_the_high_byte(tmp_path):
    """PIL decodes 48-bit PNGs itself to 8 bits per channel (v >> 8): within one level of v / 257."""
    values = np.stack([_sixteen_bit_values(), _sixteen_bit_values()[::-1], _sixteen_bit_values().T], axis=2)
    _png_rgb48(tmp_path / "a.png", values)
    rgb = _read(tmp_path / "a.png").astype(int)
    np.testing.assert_array_equal(rgb, values >> 8)
    assert np.abs(rgb - _by_257(values)).max() <= 1


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grey_and_bilevel_png(tmp_path, mode):
    values = np.arange(0, 256, 16, dtype=np.uint8).reshape(SIDE, SIDE)
    if mode == "1":
        values = np.where(values >= 128, 255, 0).astype(np.uint8)
    Image.fromarray(values).convert(mode).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == mode
    np.testing.assert_array_equal(_read(tmp_path / "a.png", channels=1), values)


def _rgb():
    return np.arange(SIDE * SIDE * 3, dtype=np.uint8).reshape(SIDE, SIDE, 3) * 5


@pytest.mark.parametrize("mode, suffix", [("RGB", "png"), ("RGBA", "png"), ("P", "png"), ("PA", "tif"),
                                          ("LA", "png")])
def test_eight_bit_colour_modes_keep_their_colours(tmp_path, mode, suffix):
    """RGB and palette images keep their exact bytes; alpha is dropped."""
    rgb = _rgb() if mode != "LA" else np.repeat(_rgb()[..., :1], 3, axis=2)
    alpha = np.full((SIDE, SIDE, 1), 77, np.uint8)
    image = {"RGB": lambda: Image.fromarray(rgb),
             "RGBA": lambda: Image.fromarray(np.concatenate([rgb, alpha], axis=2)),
             "P": lambda: Image.fromarray(rgb).quantize(colors=SIDE * SIDE, method=Image.Quantize.MAXCOVERAGE),
             "PA": lambda: Image.fromarray(rgb).quantize(colors=SIDE * SIDE).convert("PA"),
             "LA": lambda: Image.fromarray(np.concatenate([rgb[..., :1], alpha], axis=2), mode="LA")}[mode]()
    expected = np.asarray(image.convert("RGB"))  # palette modes: the palette's colours
    if mode in ("RGB", "RGBA", "LA"):
        np.testing.assert_array_equal(expected, rgb)
    image.save(tmp_path / f"a.{suffix}")
    assert Image.open(tmp_path / f"a.{suffix}").mode == mode
    np.testing.assert_array_equal(_read(tmp_path / f"a.{suffix}"), expected)


def test_cmyk_and_ycbcr_tiff(tmp_path):
    cmyk = np.zeros((SIDE, SIDE, 4), np.uint8)
    cmyk[..., :3] = _rgb()
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "a.tif")
    np.testing.assert_array_equal(_read(tmp_path / "a.tif"), 255 - _rgb())  # no black ink: 255 - C, M, Y
    ycbcr = np.zeros((SIDE, SIDE, 3), np.uint8)
    ycbcr[..., 0], ycbcr[..., 1:] = np.arange(0, 256, 16).reshape(SIDE, SIDE), 128  # neutral: grey = Y
    Image.fromarray(ycbcr, mode="YCbCr").save(tmp_path / "b.tif")
    assert Image.open(tmp_path / "b.tif").mode == "YCbCr"
    grey = _read(tmp_path / "b.tif").astype(int)
    assert np.abs(grey - ycbcr[..., :1].astype(int)).max() <= 1


def test_cielab_tiff_is_converted_to_srgb(tmp_path):
    """White (L* 100), black (L* 0), mid grey (L* 50.2 -> sRGB 119) and red (L* 53, a* 80, b* 70 -> sRGB red)."""
    lab = np.zeros((SIDE, SIDE, 3), np.uint8)  # a*, b* signed bytes: 0 is neutral
    lab[0], lab[1], lab[2], lab[3] = (255, 0, 0), (0, 0, 0), (128, 0, 0), (136, 80, 70)
    Image.fromarray(lab, mode="LAB").save(tmp_path / "a.tif")
    assert Image.open(tmp_path / "a.tif").mode == "LAB"
    rgb = _read(tmp_path / "a.tif").astype(int)
    for row, want in enumerate([(255, 255, 255), (0, 0, 0), (119, 119, 119), (255, 0, 0)]):
        assert np.abs(rgb[row] - np.array(want)).max() <= 5, (row, rgb[row])


@pytest.mark.parametrize("mode", ["HSV", "RGBX", "RGBa", "La"])
def test_in_memory_modes(mode):
    """Modes no file format stores as such: HSV (value = max channel), padded and premultiplied RGB / grey."""
    rgb = _rgb()
    if mode == "HSV":
        hsv = np.zeros((SIDE, SIDE, 3), np.uint8)
        hsv[..., 2] = rgb[..., 0]  # saturation 0: grey = value
        np.testing.assert_array_equal(np.asarray(to_8bit(Image.fromarray(hsv, mode="HSV"), 1, "x")), rgb[..., 0])
        return
    alpha = np.full((SIDE, SIDE, 1), 255, np.uint8)  # opaque: premultiplied = straight
    if mode == "La":
        image = Image.fromarray(np.concatenate([rgb[..., :1], alpha], axis=2), mode="LA").convert("La")
        np.testing.assert_array_equal(np.asarray(to_8bit(image, 1, "x")), rgb[..., 0])
        return
    image = Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA").convert(mode)
    np.testing.assert_array_equal(np.asarray(to_8bit(image, 3, "x")), rgb)


def test_a_mode_without_a_conversion_is_one_line():
    unknown = SimpleNamespace(mode="BGR;24")  # a mode PIL knows of but cannot convert
    with pytest.raises(DataError, match=r"^x\.img: images of PIL mode 'BGR;24' are not supported; save it as"):
        to_8bit(unknown, 3, "x.img")
