"""Deribit position arithmetic, pure functions only (no I/O, no exchange code).

Conventions, as ``private/get_positions`` reports them:

* inverse futures and perpetuals (BTC-PERPETUAL, BTC-27DEC24; ``instrument_type`` reversed):
  ``size`` in USD (negative when short), ``average_price`` in USD, the average of an add is
  harmonic (USD over coin), PnL in the coin: ``closed * (1/avg - 1/price)``;
* linear USDC instruments (BTC_USDC-PERPETUAL): ``size`` in the base coin, arithmetic
  average, PnL in USDC: ``closed * (price - avg)``;
* options: ``size`` in coin contracts, price in the coin, PnL ``closed * (price - avg)``.

Adding to a position moves its average; reducing realizes PnL on the closed part and keeps
the average; crossing zero (a flip) realizes the whole old position and opens the rest at the
fill price; a position closed to zero has average 0. Fees are kept apart from realized PnL,
as Deribit does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Below this a size is zero (Deribit amounts are multiples of at least 1e-4).
EPS = 1e-9
# Sizes are rounded to this many decimals so that sums of float amounts compare exactly.
SIZE_DECIMALS = 10


class PositionKind(StrEnum):
    INVERSE = "inverse"
    LINEAR = "linear"
    OPTION = "option"


def kind_of(
    instrument_name: str,
    kind: str | None = None,
    instrument_type: str | None = None,
    settlement_currency: str | None = None,
) -> PositionKind:
    """The position convention of an instrument, from its exchange spec when known
    (``kind``, ``instrument_type``, ``settlement_currency`` of ``public/get_instruments``),
    else from Deribit's naming (``BTC_USDC-...`` linear, ``...-C``/``-P`` options)."""
    if kind == "option":
        return PositionKind.OPTION
    if instrument_type == "linear" or (settlement_currency or "").upper() == "USDC":
        return PositionKind.LINEAR
    if kind is not None or instrument_type == "reversed":
        return PositionKind.INVERSE
    parts = instrument_name.split("-")
    if len(parts) == 4 and parts[-1] in ("C", "P"):
        return PositionKind.OPTION
    if "_" in parts[0]:
        return PositionKind.LINEAR
    return PositionKind.INVERSE


def pnl_currency(instrument_name: str) -> str:
    """Currency of a position's PnL and fees: its settlement currency (BTC for
    ``BTC-PERPETUAL`` and BTC options, USDC for ``BTC_USDC-PERPETUAL``)."""
    base, _, settlement = instrument_name.split("-")[0].partition("_")
    return settlement or base


def turnover_unit(kind: PositionKind, instrument_name: str) -> str:
    """Unit of :func:`notional`: USD for inverse contracts, else the settlement currency."""
    return "USD" if kind is PositionKind.INVERSE else pnl_currency(instrument_name)


@dataclass(frozen=True)
class Book:
    """A position's numbers: signed size, average entry price, realized PnL, fees."""

    size: float = 0.0
    average_price: float = 0.0
    realized_pnl: float = 0.0
    fees: float = 0.0


def apply_fill(
    book: Book, kind: PositionKind, is_buy: bool, amount: float, price: float, fee: float = 0.0
) -> tuple[Book, float]:
    """The book after one fill, and the PnL this fill realized (0 when it only adds).

    Raises ``ValueError`` for a non-positive amount or price (an inconsistent fill).
    """
    if not amount > 0 or not price > 0:
        raise ValueError(f"fill needs amount > 0 and price > 0, got {amount} @ {price}")
    size, avg = book.size, book.average_price
    delta = amount if is_buy else -amount
    realized = 0.0
    if abs(size) < EPS or (size > 0) == is_buy:
        held = abs(size)
        total = held + amount
        if kind is PositionKind.INVERSE:
            coins = held / avg if held > EPS else 0.0
            avg = total / (coins + amount / price)
        else:
            avg = (held * avg + amount * price) / total
        new_size = size + delta
    else:
        closed = min(abs(size), amount)
        sign = 1.0 if size > 0 else -1.0
        realized = sign * closed * pnl_per_unit(kind, avg, price)
        new_size = size + delta
        if abs(new_size) < EPS:
            new_size, avg = 0.0, 0.0
        elif (new_size > 0) != (size > 0):
            avg = price  # flipped: the remainder is a new position opened at this price
    new_size = round(new_size, SIZE_DECIMALS)
    if new_size == 0.0:
        avg = 0.0
    return Book(new_size, avg, book.realized_pnl + realized, book.fees + fee), realized


def pnl_per_unit(kind: PositionKind, average_price: float, price: float) -> float:
    """PnL of one unit of long size moving from ``average_price`` to ``price``."""
    if kind is PositionKind.INVERSE:
        return 1.0 / average_price - 1.0 / price
    return price - average_price


def notional(kind: PositionKind, amount: float, price: float) -> float:
    """Traded notional of a fill: USD for inverse (the amount), USDC for linear, coin for
    options."""
    if kind is PositionKind.INVERSE:
        return amount
    return amount * price


def floating_pnl(book: Book, kind: PositionKind, mark: float) -> float:
    """Unrealized PnL at ``mark`` (Deribit ``floating_profit_loss``)."""
    if abs(book.size) < EPS or not mark > 0:
        return 0.0
    return book.size * pnl_per_unit(kind, book.average_price, mark)


def close_enough(a: float, b: float, rel: float = 1e-9, abs_: float = 1e-9) -> bool:
    """Float equality for recorded vs exchange figures."""
    return abs(a - b) <= max(abs_, rel * max(abs(a), abs(b)))
