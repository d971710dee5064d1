"""QR codes as pictures for the report: what the terminal showed, what the rig presented.

:func:`qr_png` renders any text as a QR code (segno) with a caption under it: one PNG the
report can attach as it is.  segno draws only the code, so the code's modules are laid pixel
for pixel (``figimage``, no resampling: the picture still scans) on a private matplotlib
figure with the Agg canvas, and the caption is drawn under them (ASCII only, wrapped to the
picture's width, card-number-like digit runs masked).

* The merchant-presented code (the URL of ``TerminalEvent.qr_code`` on PG SHOW_QR) is not
  sensitive: ``qr_png(event.qr_code, caption=...)`` renders it as it is.
* The customer's payment code (``auth_code``, shown to the terminal's scanner with
  ``bench.cards.present_code``) is a bearer token: :func:`payment_code_png` never renders it.
  It renders its masked form (:func:`protocols.qr.mask_code`, first 6 and last 4 digits) as
  the QR code, and its caption says so: the report shows what was presented, not a code that
  could pay.  :func:`qr_png` refuses text shaped like a payment code.

The same text and caption always give the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import segno
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

from protocols.errors import ConfigError
from protocols.masking import scrub
from protocols.qr import mask_code, wallet_of
from rigs.plots import ascii_text

DPI = 100
BORDER = 4
"""The quiet zone around the code, in modules (the standard asks for 4)."""
MAX_SCALE = 40
MIN_WIDTH_PX = 240
"""The picture is at least this wide, so a caption fits beside a small code."""
CAPTION_PT = 9
LINE_PX = 15
PAD_PX = 8
MAX_CAPTION_LINES = 6


def _require_text(func: str, name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{func}(): {name} must be text, got {type(value).__name__}")
    if not value.strip():
        raise ConfigError(f"{func}(): {name} is empty; nothing to render as a QR code")
    return value


def _make_code(func: str, name: str, text: str) -> segno.QRCode:
    """The QR code of *text* (never a Micro QR: phone and terminal scanners read only QR)."""
    try:
        return segno.make(text, micro=False)
    except segno.DataOverflowError:
        raise ConfigError(f"{func}(): {name} is {len(text)} characters "
                          f"({len(text.encode('utf-8'))} bytes as UTF-8): too long for a QR "
                          f"code (at most 2953 bytes, 7089 digits)") from None
    except ValueError as exc:
        raise ConfigError(f"{func}(): {name} ({len(text)} characters) cannot be encoded as a "
                          f"QR code: {exc}") from None


def _wrap(text: str, fits: Callable[[str], bool]) -> list[str]:
    """*text* in lines that each *fits* (a word too long for a line is cut)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if fits(candidate):
            line = candidate
            continue
        if line:
            lines.append(line)
        while not fits(word) and len(word) > 1:
            cut = len(word) - 1
            while cut > 1 and not fits(word[:cut]):
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line:
        lines.append(line)
    if len(lines) > MAX_CAPTION_LINES:
        lines = lines[:MAX_CAPTION_LINES]
        last = lines[-1]
        while len(last) > 1 and not fits(last + "..."):
            last = last[:-1]
        lines[-1] = last + "..."
    return lines


def _render(code: segno.QRCode, caption: str, scale: int) -> bytes:
    modules = np.array([list(row) for row in code.matrix_iter(scale=scale, border=BORDER)],
                       dtype=bool)
    pixels = np.where(modules, 0, 255).astype(np.uint8)
    side = pixels.shape[0]
    width = max(side, MIN_WIDTH_PX)

    fig = Figure(figsize=(width / DPI, side / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    try:
        renderer = canvas.get_renderer()
        font = FontProperties(size=CAPTION_PT)

        def fits(line: str) -> bool:
            w, _, _ = renderer.get_text_width_height_descent(line, font, ismath=False)
            return bool(w <= width - 2 * PAD_PX)

        lines = _wrap(ascii_text(scrub(caption)), fits)
        caption_px = len(lines) * LINE_PX + 2 * PAD_PX if lines else 0
        height = side + caption_px
        fig.set_size_inches(width / DPI, height / DPI)
        fig.figimage(pixels, xo=(width - side) // 2, yo=caption_px, origin="upper",
                     cmap="gray", vmin=0, vmax=255, resize=False)
        if lines:
            fig.text(0.5, (caption_px - PAD_PX) / height, "\n".join(lines), ha="center",
                     va="top", fontproperties=font, linespacing=1.25, parse_math=False)
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=DPI, facecolor="white",
                    metadata={"Software": None})
        return out.getvalue()
    finally:
        fig.clear()


def qr_png(text: str, *, caption: str, scale: int = 6) -> bytes:
    """*text* as a QR code, *scale* pixels per module with a 4-module quiet zone, *caption*
    under it (ASCII, wrapped, PAN-like digit runs masked), as PNG bytes.  The picture is the
    code's width (at least :data:`MIN_WIDTH_PX`) and the code's height plus the caption's.
    ConfigError (a RigError) names the argument: empty *text*, *text* too long for a QR code
    (its length said), *text* shaped like a customer's payment code (use
    :func:`payment_code_png`), *scale* outside 1..:data:`MAX_SCALE`."""
    _require_text("qr_png", "text", text)
    if not isinstance(caption, str):
        raise ConfigError(f"qr_png(): caption must be text, got {type(caption).__name__}")
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= MAX_SCALE:
        raise ConfigError(f"qr_png(): scale must be a whole number of pixels per module in "
                          f"1..{MAX_SCALE}, got {scale!r}")
    if wallet_of(text.strip()) is not None:
        raise ConfigError(f"qr_png(): text ({len(text)} characters) has the shape of a "
                          f"customer's payment code, a bearer token: render it with "
                          f"payment_code_png(), which shows only its masked form")
    return _render(_make_code("qr_png", "text", text), caption, scale)


def payment_caption(auth_code: str) -> str:
    """What :func:`payment_code_png` writes under the code (the masked form only)."""
    return (f"customer payment code {mask_code(auth_code)} shown to the scanner; masked, as "
            f"this QR code is: not the code presented, it cannot pay")


def payment_code_png(auth_code: str) -> bytes:
    """The customer's payment code as the report shows it: a QR code of its masked form
    (:func:`protocols.qr.mask_code`) with a caption saying it is masked.  The full code is
    neither drawn nor written.  ConfigError names ``auth_code`` when it is empty or too long."""
    _require_text("payment_code_png", "auth_code", auth_code)
    masked = mask_code(auth_code)
    code = _make_code("payment_code_png", "auth_code", masked)
    return _render(code, payment_caption(auth_code), 6)
