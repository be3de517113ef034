"""The local stack: a real Kafka (kafka.py), the ``oms up`` supervisor (stack.py), broker
helpers for tests (testing.py) and the docker-compose secrets (compose_secrets.py)."""
