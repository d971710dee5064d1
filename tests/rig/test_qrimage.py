"""QR code pictures (rigs/qrimage.py): the PNG is read back with Pillow and its modules compared
with segno's matrix (segno cannot decode; this checks the picture holds exactly that code)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import segno
from PIL import Image

from protocols.qr import mask_code
from rigs.errors import RigError
from rigs.qrimage import BORDER, MIN_WIDTH_PX, payment_caption, payment_code_png, qr_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
URL = "https://qr.example.com/pay/o/7f3a9c21?sign=ab12"
AUTH_CODE = "134567890123456789"  # WeChat Pay shape: 18 digits starting 10-15


def size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_SIGNATURE) and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def code_matrix(text: str) -> list[list[bool]]:
    code = segno.make(text, micro=False)
    return [[bool(v) for v in row] for row in code.matrix_iter(scale=1, border=BORDER)]


def read_back(png: bytes, text: str, scale: int) -> list[list[bool]]:
    """The modules of *png*, read where the code of *text* would lie."""
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    side = len(code_matrix(text))
    left = (grey.shape[1] - side * scale) // 2
    return [[bool(grey[r * scale + scale // 2, left + c * scale + scale // 2] < 128)
             for c in range(side)] for r in range(side)]


def test_merchant_code_png_signature_size_and_modules() -> None:
    png = qr_png(URL, caption="merchant-presented code (PG SHOW_QR), order 7f3a9c21")
    side = segno.make(URL, micro=False).symbol_size(scale=6, border=BORDER)[0]
    width, height = size(png)
    assert width == max(side, MIN_WIDTH_PX)
    assert height > side  # the caption under the code
    assert read_back(png, URL, 6) == code_matrix(URL)
    assert read_back(png, URL, 6) != code_matrix(URL + "x")  # the check can tell codes apart


def test_scale_sets_pixels_per_module() -> None:
    small, big = qr_png(URL, caption="c", scale=2), qr_png(URL, caption="c", scale=10)
    side = segno.make(URL, micro=False).symbol_size(scale=1, border=BORDER)[0]
    assert size(big)[0] == side * 10
    assert size(small)[0] == max(side * 2, MIN_WIDTH_PX)
    assert read_back(big, URL, 10) == code_matrix(URL)
    assert read_back(small, URL, 2) == code_matrix(URL)


def test_same_text_same_bytes() -> None:
    assert qr_png(URL, caption="c") == qr_png(URL, caption="c")
    assert qr_png(URL, caption="c") != qr_png(URL + "1", caption="c")
    assert payment_code_png(AUTH_CODE) == payment_code_png(AUTH_CODE)


def test_a_longer_caption_wraps_into_more_lines() -> None:
    short = size(qr_png(URL, caption="one line"))
    long = size(qr_png(URL, caption="a caption long enough to need several lines under the "
                                    "code, which is only a few hundred pixels wide " * 2))
    assert long[0] == short[0] and long[1] > short[1]


def test_payment_code_renders_only_the_masked_form() -> None:
    masked = mask_code(AUTH_CODE)
    assert masked == "134567********6789"
    png = payment_code_png(AUTH_CODE)
    assert read_back(png, masked, 6) == code_matrix(masked)
    assert read_back(png, masked, 6) != code_matrix(AUTH_CODE)
    caption = payment_caption(AUTH_CODE)
    assert masked in caption and "masked" in caption
    for text in (caption, png.decode("latin-1")):
        assert AUTH_CODE not in text
        assert AUTH_CODE[6:14] not in text  # not even the hidden middle digits
    info = Image.open(io.BytesIO(png)).info  # PNG text chunks
    assert not any(AUTH_CODE in str(v) for v in info.values())


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_text_is_refused_naming_the_argument(text: str) -> None:
    with pytest.raises(RigError, match=r"qr_png\(\): text is empty"):
        qr_png(text, caption="c")
    with pytest.raises(RigError, match=r"payment_code_png\(\): auth_code is empty"):
        payment_code_png(text)


def test_text_too_long_is_refused_naming_its_length() -> None:
    with pytest.raises(RigError, match=r"qr_png\(\): text is 3000 characters .*too long"):
        qr_png("a" * 3000, caption="c")
    with pytest.raises(RigError, match=r"auth_code is 8000 characters .*too long"):
        payment_code_png("1" * 8000)
    assert qr_png("a" * 2900, caption="long but fits").startswith(PNG_SIGNATURE)


def test_qr_png_refuses_a_payment_code_and_a_bad_scale() -> None:
    with pytest.raises(RigError, match="payment_code_png"):
        qr_png(AUTH_CODE, caption="oops")
    for scale in (0, 41, 2.5, True):
        with pytest.raises(RigError, match="scale"):
            qr_png(URL, caption="c", scale=scale)  # type: ignore[arg-type]
