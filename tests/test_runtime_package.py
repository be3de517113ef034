"""The runtime package ``oms`` stands without the development package ``oms_dev``.

The service image installs ``oms`` alone: the Dockerfile copies ``oms/`` and no dev extras.
Every module of ``oms`` is imported in a fresh interpreter where ``oms_dev``, and every
distribution that only the ``dev`` extra brings, cannot be imported; the development commands
(``oms up``, ``oms bench``, ``oms chaos``) say in one line what is missing. The package set
is built from exactly what the Dockerfile copies.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
DEV_PACKAGE = "oms_dev"

# Installed first in the child interpreter: a finder that refuses the listed top-level modules
# (argv[1], JSON) exactly as a missing package would, before any other finder looks.
BLOCKER = textwrap.dedent(
    """
    import importlib.abc
    import json
    import sys

    BLOCKED = frozenset(json.loads(sys.argv[1]))


    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    sys.meta_path.insert(0, NotInstalled())
    """
)

IMPORT_ALL = BLOCKER + textwrap.dedent(
    """
    import importlib
    import pkgutil

    try:
        import oms_dev  # noqa: F401
        blocked = False
    except ModuleNotFoundError:
        blocked = True

    import oms

    failed = {}


    def record(name):
        failed[name] = repr(sys.exc_info()[1])


    names = []
    for info in pkgutil.walk_packages(oms.__path__, "oms.", onerror=record):
        names.append(info.name)
        try:
            importlib.import_module(info.name)
        except BaseException as exc:
            failed[info.name] = repr(exc)
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    print(json.dumps({"blocked": blocked, "names": names, "failed": failed, "loaded": loaded}))
    """
)

RUN_CLI = BLOCKER + textwrap.dedent(
    """
    from oms.cli.main import app

    app(sys.argv[2:], prog_name="oms")
    """
)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_closure(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` need, transitively, with the extras they name
    (normalised names)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(text) for text in requirements]
    while todo:
        req = todo.pop()
        key = (_normal(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            dep = Requirement(text)
            extras = {"", *req.extras}
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in extras):
                todo.append(dep)
    return {name for name, _ in seen}


def dev_only_modules() -> list[str]:
    """Top-level modules of ``oms_dev`` and of the distributions only the ``dev`` extra
    installs (pytest, hypothesis, aiosmtpd, matplotlib, ...), not needed by a runtime one."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _requirement_closure(project["dependencies"])
    dev = _requirement_closure(project["optional-dependencies"]["dev"])
    dev_only = dev - runtime
    modules = {
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if module.isidentifier() and all(_normal(d) in dev_only for d in dists)
    }
    return sorted(modules | {DEV_PACKAGE})


@pytest.fixture(scope="module")
def blocked() -> list[str]:
    modules = dev_only_modules()
    # The list is what makes the import check mean something: it must hold the dev package
    # and the test tools the image does not have.
    assert {DEV_PACKAGE, "pytest", "hypothesis", "aiosmtpd"} <= set(modules)
    return modules


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
        check=False,
    )


def test_every_runtime_module_imports_without_the_dev_package(blocked: list[str]) -> None:
    proc = _python(IMPORT_ALL, json.dumps(blocked))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["blocked"], "the child could still import oms_dev"
    assert report["failed"] == {}
    assert report["loaded"] == []
    # Walked the whole package, the development command groups included.
    for name in ("oms.cli.main", "oms.cli.bench", "oms.cli.chaos", "oms.cli.stack",
                 "oms.healthcheck", "oms.streams.worker", "oms.exchange.paper.server"):  # fmt: skip
        assert name in report["names"]


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["bench", "e2e", "--orders", "10"], "oms bench"),
        (["bench", "all", "--quick"], "oms bench"),
        (["chaos", "run", "--quick"], "oms chaos"),
        (["up"], "oms up"),
    ],
)
def test_dev_commands_say_what_is_missing(
    blocked: list[str], args: list[str], command: str
) -> None:
    proc = _python(RUN_CLI, json.dumps(blocked), *args)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == f"{command} needs the development install: make install"
    assert proc.stdout == ""


def test_runtime_commands_work_without_the_dev_package(blocked: list[str]) -> None:
    proc = _python(RUN_CLI, json.dumps(blocked), "--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("worker", "gateway", "sink", "paper-exchange", "bench", "chaos", "up"):
        assert command in proc.stdout


def _packages_built_from(context: Path, tmp_path: Path) -> set[str]:
    """Top-level packages setuptools finds in ``context`` with the project's configuration."""
    egg_base = tmp_path / "egg"
    egg_base.mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-c", "import setuptools; setuptools.setup()",
         "-q", "egg_info", "--egg-base", str(egg_base)],
        cwd=context, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (info,) = egg_base.glob("*.egg-info")
    return set((info / "top_level.txt").read_text().split())


def _copy(sources: list[str], context: Path) -> None:
    for source in sources:
        src = ROOT / source
        if src.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(src, context / source, ignore=ignore)
        else:
            shutil.copy(src, context / source)


def test_image_build_context_holds_the_runtime_package_only(tmp_path: Path) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, flags=re.M)
    sources = [source for line in copied for source in line.split()]
    assert "oms" in sources and DEV_PACKAGE not in sources
    image = tmp_path / "image"
    image.mkdir()
    _copy(sources, image)
    assert _packages_built_from(image, tmp_path / "image-build") == {"oms"}
    # The development install, from the checkout, has both.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    _copy([*sources, DEV_PACKAGE], checkout)
    assert _packages_built_from(checkout, tmp_path / "checkout-build") == {"oms", DEV_PACKAGE}
