"""The order domain imports no messaging, storage or network library, not even indirectly.

Each module is imported in a fresh interpreter: in this test process the stream agents' tests
may already have loaded Faust or Kafka clients, which would hide an import the domain added.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import oms.orders

ROOT = Path(__file__).resolve().parents[2]

# Top-level packages the domain must never pull in.
FORBIDDEN = ("faust", "aiokafka", "confluent_kafka", "clickhouse_connect", "websockets", "aiohttp")

MODULES = sorted(
    ["oms.orders"]
    + [info.name for info in pkgutil.walk_packages(oms.orders.__path__, prefix="oms.orders.")]
)


def _loaded_after_import(module: str) -> list[str]:
    """Top-level packages in ``sys.modules`` after importing ``module`` in a new interpreter."""
    script = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted({name.partition('.')[0] for name in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,  # the checkout under test, not an installed copy
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return loaded


def test_every_domain_module_is_found() -> None:
    # A test over an empty list would pass for nothing.
    assert {"oms.orders.state_machine", "oms.orders.scheduling", "oms.orders.params"} <= set(
        MODULES
    )


@pytest.mark.parametrize("module", MODULES)
def test_domain_module_imports_no_io_library(module: str) -> None:
    loaded = set(_loaded_after_import(module))
    assert module.partition(".")[0] in loaded  # the import did happen
    assert sorted(loaded.intersection(FORBIDDEN)) == []


def test_the_check_sees_a_forbidden_import() -> None:
    # The same probe on a module that does use them (the SDK) must see them, or the test
    # above proves nothing.
    assert {"aiohttp", "aiokafka"} <= set(_loaded_after_import("oms.client"))
