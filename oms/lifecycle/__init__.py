"""Order lifecycle: per-order policies, monitoring, auto-cancel, partial fills,
error strategies and the manual review flow."""
