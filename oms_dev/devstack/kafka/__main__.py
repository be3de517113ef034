"""``python -m oms_dev.devstack.kafka``: see :mod:`oms_dev.devstack.kafka.cli`."""

from oms_dev.devstack.kafka.cli import app

app(prog_name="python -m oms_dev.devstack.kafka")
