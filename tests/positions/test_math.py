"""Position math against cases computed by hand (Deribit conventions)."""

from __future__ import annotations

import pytest

from oms.positions.math import Book, PositionKind, apply_fill, floating_pnl, kind_of

INV, LIN, OPT = PositionKind.INVERSE, PositionKind.LINEAR, PositionKind.OPTION


def fills(kind: PositionKind, *steps: tuple[str, float, float]) -> tuple[Book, list[float]]:
    book, realized = Book(), []
    for side, amount, price in steps:
        book, pnl = apply_fill(book, kind, side == "buy", amount, price)
        realized.append(pnl)
    return book, realized


def test_inverse_add_uses_harmonic_average() -> None:
    # 100 USD at 50,000 is 0.002 BTC; 100 USD at 40,000 is 0.0025 BTC: 200 / 0.0045.
    book, realized = fills(INV, ("buy", 100, 50_000), ("buy", 100, 40_000))
    assert book.size == 200
    assert book.average_price == pytest.approx(200 / 0.0045)  # 44,444.44
    assert realized == [0.0, 0.0]


def test_inverse_reduction_realizes_pnl_in_coin_and_keeps_average() -> None:
    # Long 200 @ 40,000, sell 50 @ 50,000: 50 * (1/40,000 - 1/50,000) = 0.00025 BTC.
    book, realized = fills(INV, ("buy", 200, 40_000), ("sell", 50, 50_000))
    assert book.size == 150
    assert book.average_price == pytest.approx(40_000)
    assert realized[1] == pytest.approx(0.00025)
    assert book.realized_pnl == pytest.approx(0.00025)


def test_inverse_short_profits_when_price_falls() -> None:
    # Short 100 @ 50,000, buy back 100 @ 40,000: -100 * (1/50,000 - 1/40,000) = +0.0005.
    book, realized = fills(INV, ("sell", 100, 50_000), ("buy", 100, 40_000))
    assert book.size == 0 and book.average_price == 0
    assert realized[1] == pytest.approx(0.0005)


def test_inverse_flip_long_to_short_opens_remainder_at_fill_price() -> None:
    # Long 100 @ 40,000, sell 300 @ 50,000: closes 100 (+0.0005 BTC), short 200 @ 50,000.
    book, realized = fills(INV, ("buy", 100, 40_000), ("sell", 300, 50_000))
    assert book.size == -200
    assert book.average_price == 50_000
    assert realized[1] == pytest.approx(100 * (1 / 40_000 - 1 / 50_000))


def test_linear_and_option_use_arithmetic_average_and_price_difference() -> None:
    # Linear USDC: 1 BTC @ 100 + 3 BTC @ 200 -> avg 175; sell 2 @ 300 -> +250 USDC.
    book, realized = fills(LIN, ("buy", 1, 100), ("buy", 3, 200), ("sell", 2, 300))
    assert book.size == 2 and book.average_price == pytest.approx(175)
    assert realized[2] == pytest.approx(250)
    # Option (price in BTC): short 2 @ 0.05, buy 3 @ 0.03 -> +0.04 BTC, long 1 @ 0.03.
    book, realized = fills(OPT, ("sell", 2, 0.05), ("buy", 3, 0.03))
    assert book.size == 1 and book.average_price == pytest.approx(0.03)
    assert realized[1] == pytest.approx(0.04)


def test_floating_pnl_and_fees_are_kept_apart() -> None:
    book, _ = apply_fill(Book(), INV, True, 100, 50_000, fee=0.00001)
    assert book.fees == pytest.approx(0.00001) and book.realized_pnl == 0
    assert floating_pnl(book, INV, 40_000) == pytest.approx(100 * (1 / 50_000 - 1 / 40_000))


@pytest.mark.parametrize("amount,price", [(0, 50_000), (-10, 50_000), (10, 0), (10, -1)])
def test_non_positive_amount_or_price_is_refused(amount: float, price: float) -> None:
    with pytest.raises(ValueError):
        apply_fill(Book(), INV, True, amount, price)


@pytest.mark.parametrize(
    "name,spec,expected",
    [
        ("BTC-PERPETUAL", {}, INV),
        ("BTC-27DEC24", {"kind": "future", "instrument_type": "reversed"}, INV),
        ("BTC_USDC-PERPETUAL", {}, LIN),
        ("ETH_USDC-PERPETUAL", {"kind": "future", "settlement_currency": "USDC"}, LIN),
        ("BTC-27DEC24-60000-C", {}, OPT),
        ("BTC-27DEC24-60000-P", {"kind": "option"}, OPT),
    ],
)
def test_kind_of(name: str, spec: dict[str, str], expected: PositionKind) -> None:
    assert kind_of(name, **spec) is expected
