"""Account permissions, pre-trade risk limits and trading states."""
