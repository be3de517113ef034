"""Notification channels and rules (see the notifications issue); empty in the skeleton."""
