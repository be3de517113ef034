"""A real Apache Kafka broker for development, tests and benchmarks, from Maven Central.

No Docker engine and no download site other than package registries are reachable on the
project's machines, so the broker is assembled from the ``org.apache.kafka:kafka_2.13`` jar and
its runtime dependencies (fetched with Maven) and run as a single KRaft node
(``process.roles=broker,controller``) with ``java -cp 'libs/*' kafka.Kafka``.

By job: :mod:`.fetch` (Java and Maven on the machine, the jars), :mod:`.config` (what the
broker is told), :mod:`.secure` (the secure mode: local certificates, SCRAM users, ACLs on),
:mod:`.process` (:class:`KafkaBroker`: start, readiness, stop) and :mod:`.cli`, the command
line::

    python -m oms_dev.devstack.kafka fetch             # download jars once (fast when present)
    python -m oms_dev.devstack.kafka start [--port N]  # format once, start detached, wait ready
    python -m oms_dev.devstack.kafka status
    python -m oms_dev.devstack.kafka stop
    python -m oms_dev.devstack.kafka start --secure   # SASL_SSL, SCRAM users, the ACL table

Tests use ``KafkaBroker.isolated(...)`` to get a broker on free ports in a temporary directory.
"""

from oms_dev.devstack.kafka.fetch import INSTALL_HINT, DevstackError
from oms_dev.devstack.kafka.process import KafkaBroker

__all__ = ["INSTALL_HINT", "DevstackError", "KafkaBroker"]
