"""Development tooling for ``oms``: the local stack, a real Kafka from Maven Central, the
benchmarks, the chaos suite and the test harness.

Installed by the development install (``make install``: ``pip install -e '.[dev]'``), never
in the service image, which copies only ``oms/``. ``oms`` does not import this package; only
its development commands (``oms up``, ``oms bench``, ``oms chaos``) load it when they run.
"""
