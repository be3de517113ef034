"""Accounts: credentials, tokens, balances, positions and margin."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oms.exchange.paper import errors
from oms.exchange.paper.errors import RpcError
from oms.exchange.paper.instruments import Instrument
from oms.exchange.paper.orders import Order
from oms.exchange.paper.positions import Position
from oms.exchange.paper.ratelimit import RateLimiter
from oms.exchange.paper.recorder import NULL_RECORDER, Recorder
from oms.exchange.paper.signatures import NonceWindow, SignedClaim, check

TOKEN_TTL_S = 900
CURRENCIES = ("BTC", "ETH", "USDC")
SCOPE = "account:read_write trade:read_write wallet:read_write block_trade:read_write"

MarkLookup = Callable[[Instrument], float]

# ``public/get_currencies``: what Deribit publishes about each currency it holds. The paper
# exchange has no wallets; the withdrawal figures are Deribit's, for clients that read them.
_CURRENCY_INFO: dict[str, dict[str, Any]] = {
    "BTC": {
        "currency_long": "Bitcoin", "coin_type": "BITCOIN", "min_confirmations": 1,
        "withdrawal_fee": 0.0001, "decimals": 8, "network_currency": "BTC",
    },
    "ETH": {
        "currency_long": "Ethereum", "coin_type": "ETHER", "min_confirmations": 1,
        "withdrawal_fee": 0.0006, "decimals": 8, "network_currency": "ETH",
    },
    "USDC": {
        "currency_long": "USD Coin", "coin_type": "ETHER", "min_confirmations": 1,
        "withdrawal_fee": 2.0, "decimals": 6, "network_currency": "ETH",
    },
}


def currency_info(currency: str) -> dict[str, Any]:
    """The spec's ``currency_with_apr`` object for one of :data:`CURRENCIES`."""
    info = _CURRENCY_INFO[currency]
    fee = info["withdrawal_fee"]
    return {
        "currency": currency,
        **info,
        "min_withdrawal_fee": fee,
        "network_fee": fee,
        "in_cross_collateral_pool": True,
        "withdrawal_priorities": [],
    }


@dataclass(eq=False)
class Account:
    """One (sub-)account of the paper exchange."""

    account_id: str
    client_id: str
    client_secret: str = field(repr=False)
    tier: int
    balances: dict[str, float]
    user_id: int = 0
    positions: dict[str, Position] = field(default_factory=dict)
    open_orders: dict[str, Order] = field(default_factory=dict)
    reduce_only: dict[str, Order] = field(default_factory=dict)  # resting reduce-only orders
    # Open-order margin per instrument, split by side so opposite orders can net (Deribit
    # charges the larger side).
    margin_buy: dict[str, float] = field(default_factory=dict)
    margin_sell: dict[str, float] = field(default_factory=dict)
    limiter: RateLimiter | None = None

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.tier)

    def position(self, inst: Instrument) -> Position:
        pos = self.positions.get(inst.name)
        if pos is None:
            pos = self.positions[inst.name] = Position(inst)
        return pos

    def hold(self, order: Order, margin: float) -> None:
        """Replace the margin ``order`` holds by ``margin``."""
        book = self.margin_buy if order.is_buy else self.margin_sell
        name = order.inst.name
        book[name] = book.get(name, 0.0) - order.reserved + margin
        order.reserved = margin

    def orders_margin(self, currency: str, instruments: dict[str, Instrument]) -> float:
        total = 0.0
        for name, buy in self.margin_buy.items():
            if instruments[name].currency == currency:
                total += max(buy, self.margin_sell.get(name, 0.0))
        for name, sell in self.margin_sell.items():
            if instruments[name].currency == currency and name not in self.margin_buy:
                total += sell
        return total

    def available_funds(
        self, currency: str, mark: MarkLookup, instruments: dict[str, Instrument]
    ) -> float:
        """Margin balance less initial margin of positions and open orders (hot path)."""
        upl = im = 0.0
        for pos in self.positions.values():
            inst = pos.inst
            if inst.currency != currency or pos.size == 0.0:
                continue
            m = mark(inst)
            upl += pos.floating(m)
            im += pos.initial_margin(m)
        balance = self.balances.get(currency, 0.0)
        return balance + upl - im - self.orders_margin(currency, instruments)

    def summary(
        self, currency: str, mark: MarkLookup, instruments: dict[str, Instrument]
    ) -> dict[str, Any]:
        """The figures behind ``private/get_account_summary`` for one currency."""
        balance = self.balances.get(currency, 0.0)
        futures_upl = options_upl = options_value = 0.0
        futures_rpl = options_rpl = 0.0
        im = mm = delta = 0.0
        for pos in self.positions.values():
            inst = pos.inst
            if inst.currency != currency or (abs(pos.size) < 1e-12 and pos.realized == 0):
                continue
            m = mark(inst)
            if inst.is_option:
                options_upl += pos.floating(m)
                options_value += pos.size * m
                options_rpl += pos.realized
            else:
                futures_upl += pos.floating(m)
                futures_rpl += pos.realized
            im += pos.initial_margin(m)
            mm += pos.maintenance_margin(m)
            delta += pos.size_currency(m)
        orders_im = self.orders_margin(currency, instruments)
        equity = balance + futures_upl + options_value
        margin_balance = balance + futures_upl + options_upl
        available = margin_balance - im - orders_im
        return {
            "currency": currency,
            "balance": balance,
            "equity": equity,
            "margin_balance": margin_balance,
            "available_funds": available,
            "available_withdrawal_funds": max(0.0, min(balance, available)),
            "initial_margin": im + orders_im,
            "maintenance_margin": mm,
            "projected_initial_margin": im + orders_im,
            "projected_maintenance_margin": mm,
            "session_upl": futures_upl + options_upl,
            "session_rpl": futures_rpl + options_rpl,
            "total_pl": futures_upl + options_upl + futures_rpl + options_rpl,
            "futures_pl": futures_upl + futures_rpl,
            "futures_session_upl": futures_upl,
            "futures_session_rpl": futures_rpl,
            "options_pl": options_upl + options_rpl,
            "options_session_upl": options_upl,
            "options_session_rpl": options_rpl,
            "options_value": options_value,
            "options_delta": 0.0,
            "options_gamma": 0.0,
            "options_vega": 0.0,
            "options_theta": 0.0,
            "options_gamma_map": {},
            "options_theta_map": {},
            "options_vega_map": {},
            "delta_total": delta,
            "projected_delta_total": delta,
            "fee_balance": 0.0,
            "spot_reserve": 0.0,
            "additional_reserve": 0.0,
            "estimated_liquidation_ratio": (mm / margin_balance) if margin_balance > 0 else 0.0,
            "security_keys_enabled": False,
            "mmp_enabled": False,
            "portfolio_margining_enabled": False,
            "cross_collateral_enabled": False,
            "margin_model": "segregated_sm",
            "system_name": self.account_id,
            "username": self.account_id,
            "email": f"{self.account_id}@paper.invalid",
            "type": "main",
            "id": self.user_id,
            "login_enabled": True,
            "interuser_transfers_enabled": False,
            "creation_timestamp": 0,
            "limits": {},
            "fees": {},
        }


class AccountStore:
    """Accounts by id and client_id, and the tokens issued to them."""

    def __init__(
        self,
        starting_balances: dict[str, float],
        default_tier: int,
        auto_create: bool,
    ) -> None:
        self.starting_balances = starting_balances
        self.default_tier = default_tier
        self.auto_create = auto_create
        self.by_id: dict[str, Account] = {}
        self.by_client_id: dict[str, Account] = {}
        self._access: dict[str, tuple[Account, float]] = {}
        self._refresh: dict[str, Account] = {}
        self._next_user_id = 100_001
        self.recorder: Recorder = NULL_RECORDER
        self.nonces = NonceWindow()

    def add(
        self,
        account_id: str,
        client_id: str,
        client_secret: str,
        tier: int | None = None,
        balances: dict[str, float] | None = None,
        user_id: int | None = None,
    ) -> Account:
        """Register an account (balances default to the starting balances)."""
        merged = dict(self.starting_balances)
        merged.update(balances or {})
        if user_id is None:
            user_id = self._next_user_id
        account = Account(
            account_id,
            client_id,
            client_secret,
            tier or self.default_tier,
            merged,
            user_id=user_id,
        )
        self._next_user_id = max(self._next_user_id, user_id + 1)
        self.by_id[account_id] = account
        self.by_client_id[client_id] = account
        self.recorder.account(account)
        return account

    def load_file(self, path: Path) -> int:
        """Load accounts from a secrets-shaped JSON file; returns how many.

        An account that already exists (restored from the durable state) takes the file's
        credentials and tier but keeps its balances: they are the result of its trading.
        """
        data = json.loads(Path(path).read_text())
        for account_id, entry in data.get("accounts", {}).items():
            client_id, secret = str(entry["client_id"]), str(entry["client_secret"])
            tier = int(entry.get("tier") or self.default_tier)
            known = self.by_id.get(account_id)
            if known is not None:
                self.update_credentials(known, client_id, secret, tier)
                continue
            balances = {k.upper(): float(v) for k, v in (entry.get("balances") or {}).items()}
            self.add(account_id, client_id, secret, tier, balances)
        return len(data.get("accounts", {}))

    def update_credentials(
        self, account: Account, client_id: str, client_secret: str, tier: int
    ) -> None:
        """Give an existing account new credentials and tier."""
        if (account.client_id, account.client_secret, account.tier) == (
            client_id, client_secret, tier,
        ):
            return
        if self.by_client_id.get(account.client_id) is account:
            del self.by_client_id[account.client_id]
        account.client_id, account.client_secret = client_id, client_secret
        if account.tier != tier:
            account.tier = tier
            account.limiter = RateLimiter(tier)
        self.by_client_id[client_id] = account
        self.recorder.account(account)

    def authenticate(self, client_id: str, client_secret: str) -> Account:
        """Check a key pair, creating the account on first sight when allowed."""
        account = self.by_client_id.get(client_id)
        if account is None:
            if not self.auto_create:
                raise RpcError(errors.INVALID_CREDENTIALS)
            return self.add(client_id, client_id, client_secret)
        if not secrets.compare_digest(account.client_secret, client_secret):
            raise RpcError(errors.INVALID_CREDENTIALS)
        return account

    def verify_signature(self, claim: SignedClaim, data: str, now_ms: int) -> Account:
        """The account whose key signed ``data`` as ``claim`` says (a signature cannot
        create an account: the secret it would need is never sent)."""
        account = self.by_client_id.get(claim.client_id)
        if account is None:
            raise RpcError(errors.INVALID_CREDENTIALS)
        check(claim, account.client_secret, data, self.nonces, now_ms)
        return account

    def issue(self, account: Account) -> dict[str, Any]:
        """A fresh access/refresh token pair (the ``public/auth`` result)."""
        access = secrets.token_urlsafe(24)
        refresh = secrets.token_urlsafe(24)
        self._access[access] = (account, time.monotonic() + TOKEN_TTL_S)
        self._refresh[refresh] = account
        return {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": TOKEN_TTL_S,
            "token_type": "bearer",
            "scope": SCOPE,
            "enabled_features": [],
        }

    def by_refresh_token(self, token: str) -> Account:
        account = self._refresh.pop(token, None)
        if account is None:
            raise RpcError(errors.INVALID_CREDENTIALS, {"reason": "invalid refresh token"})
        return account

    def by_access_token(self, token: str) -> Account | None:
        entry = self._access.get(token)
        if entry is None:
            return None
        account, expires = entry
        if time.monotonic() > expires:
            del self._access[token]
            return None
        return account
