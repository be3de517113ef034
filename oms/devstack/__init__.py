"""Developer tooling: a real local Kafka (kafka.py), the `oms up` stack (stack.py),
test helpers (testing.py) and the container health check (healthcheck.py)."""
