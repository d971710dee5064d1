"""The terminal's thermal printer: receipt layout (pure) and the paper sensor model.

Only the masked PAN ever reaches a receipt; the text is scrubbed again before it is returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from protocols.ecr import Copy, Cvm, EntryMode
from protocols.masking import scrub

COPIES = (Copy.MERCHANT, Copy.CUSTOMER)
COPY_TITLES: Mapping[str, str] = {Copy.MERCHANT: "商户存根 MERCHANT COPY",
                                  Copy.CUSTOMER: "持卡人存根 CUSTOMER COPY"}
CURRENCY_NAMES = {"156": "RMB", "840": "USD", "978": "EUR"}
#: Marks printed under the copy title of a receipt that is not the first print.
REPRINT_MARK = "*** 重打印 REPRINT ***"
HELD_MARK = "*** 断电补打 HELD RECEIPT ***"  # printed after boot: power was lost before it
#: The copies left when the paper ran out (or the printer went) mid-receipt, printed once the
#: printer can print again.
CONTINUED_MARK = "*** 续打 CONTINUED ***"
WIDTH = 32
#: The letter after the card number: how the card was read (a fallback swipe is F).
ENTRY_LETTERS: Mapping[str, str] = {EntryMode.CHIP: "I", EntryMode.SWIPE: "S",
                                    EntryMode.TAP: "C", "fallback": "F"}
#: The line saying how the cardholder was verified (signature: only once captured).
CVM_LINES: Mapping[str, str] = {Cvm.ONLINE_PIN: "凭密码 PIN ENTERED",
                                Cvm.OFFLINE_PIN: "凭密码 PIN VERIFIED BY CARD",
                                Cvm.NO_CVM: "免密免签 NO CVM REQUIRED"}
#: On both copies of a receipt the cardholder signed on the pad.
SIGNATURE_CAPTURED = "电子签名已采集 SIGNATURE CAPTURED"


@dataclass(frozen=True)
class ReceiptData:
    merchant_name: str
    merchant_id: str
    terminal_id: str
    operator: str
    batch_no: int
    stan: int
    rrn: str
    auth_code: str
    masked_pan: str
    app_label: str
    amount_minor: int
    currency_code: str
    when: datetime
    title: str  # the transaction type's receipt title (protocols.transactions row)
    original: str = ""  # the original transaction (OriginalRef.describe()), types that need one
    mark: str = ""  # REPRINT_MARK, HELD_MARK, CONTINUED_MARK or ''
    entry: str = ""  # EntryMode value, or 'fallback' ('' / manual: no letter)
    cvm: str = ""  # Cvm value ('' no card read)
    signature: bool = False  # signed on the pad
    qr_order: str = ""  # the QR platform's order id (entry mode qr; app_label is the wallet)


def format_amount(amount_minor: int, currency_code: str) -> str:
    name = CURRENCY_NAMES.get(currency_code, currency_code)
    return f"{name} {amount_minor // 100}.{amount_minor % 100:02d}"


def format_receipt(copy: str, d: ReceiptData) -> str:
    """One copy of a transaction receipt (``copy`` is 'merchant' or 'customer')."""
    lines = [
        "POS 签购单 SALES SLIP".center(WIDTH),
        COPY_TITLES[copy],
        *([d.mark] if d.mark else []),
        "-" * WIDTH,
        f"商户名称 MERCHANT: {d.merchant_name}",
        f"商户编号 MID: {d.merchant_id}",
        f"终端编号 TID: {d.terminal_id}  操作员: {d.operator}",
        *([f"付款码 PAY CODE: {d.masked_pan} QR" if d.masked_pan else "扫码支付 QR PAYMENT",
           f"钱包 WALLET: {d.app_label}", f"订单号 ORDER: {d.qr_order}"] if d.qr_order else
          [f"卡号 CARD NO: {d.masked_pan}" + (f" {ENTRY_LETTERS[d.entry]}"
                                             if d.entry in ENTRY_LETTERS else ""),
           f"应用 APP: {d.app_label}"]),
        f"交易类型 TYPE: {d.title}",
        *([f"原交易 ORIGINAL: {d.original}"] if d.original else []),
        f"批次号 BATCH: {d.batch_no:06d}  凭证号 TRACE: {d.stan:06d}",
        f"参考号 REF: {d.rrn}  授权码 AUTH: {d.auth_code}",
        f"日期时间 DATE: {d.when:%Y/%m/%d %H:%M:%S}",
        f"金额 AMOUNT: {format_amount(d.amount_minor, d.currency_code)}",
        *([CVM_LINES[d.cvm]] if d.cvm in CVM_LINES else []),
        *([SIGNATURE_CAPTURED] if d.signature else []),
        "-" * WIDTH,
    ]
    if copy == Copy.MERCHANT:
        lines += ["持卡人签名 SIGNATURE:", "",
                  "本人确认以上交易 I ACKNOWLEDGE SATISFACTORY RECEIPT"]
    return scrub("\n".join(lines) + "\n")


class PaperSensor:
    """Paper present or not (driven by the bench's relay through the harness)."""

    def __init__(self, present: bool = True) -> None:
        self.present = present

    def set(self, present: bool) -> bool:
        """Update; returns True when the state changed."""
        changed = present != self.present
        self.present = present
        return changed
