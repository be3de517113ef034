"""The local stack: a real Kafka (kafka/), the ``oms up`` supervisor (stack.py), free ports
(net.py), broker helpers for tests (testing.py) and the docker-compose secrets
(compose_secrets.py)."""
