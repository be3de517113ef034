"""Conditions of conditional orders: parsing, validation, and the trigger engine."""
