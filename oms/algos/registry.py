"""Execution strategy plugins: discovered through entry points, loaded, reloaded when their
code or settings change, unloaded, all without a worker restart.

Where strategies come from, later ones overriding earlier ones of the same name:

1. the built-ins (``twap``, ``chase``, ``sor``), so a worker whose package metadata is stale (an
   editable install made before the entry points existed) still has them;
2. entry points of the group ``oms.strategies`` (``[project.entry-points."oms.strategies"]``
   in a package's ``pyproject.toml``), found with :func:`importlib.metadata.entry_points`
   (or in the distributions under ``search_path``), plus any given explicitly;
3. explicit sources: ``name -> "package.module:attr"`` or ``"/path/to/file.py:attr"``;
4. the strategies file (JSON, read again when it changes)::

       {"my_algo": {"source": "/opt/algos/my_algo.py:MyAlgo", "settings": {"k": 1}},
        "chase": {"settings": {"requote_again_ms": 1000}},
        "twap": {"enabled": false}}

``attr`` names a class (called with the strategy's settings, a dict) or an object that has
the hooks of :class:`~oms.algos.strategy.ExecutionStrategy`.

A strategy's version is a hash of its source, its module file and its settings. Each version
is executed as a private copy of its module (``<module>__v<version>`` in ``sys.modules``), so
a new version never changes the code an older one runs: an order records the version it
started with (``metadata.algo_version``) and keeps it while it is in flight; a version that is
no longer current stays alive while an order holds it (:meth:`StrategyRegistry.hold`) and is
dropped when none does. Only the module file itself is hashed: a change in a module it
imports is not seen (and that module is shared by every version).

A plugin that cannot be loaded (syntax or import error, missing hooks, no pydantic
``params_model``, a failing constructor) is refused with ``strategy_refused`` and the reason;
the previous good version, if any, stays current. Nothing here raises into the worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, distributions, entry_points
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel

from oms.algos.strategy import HOOKS, ExecutionStrategy
from oms.schemas import ReasonCode
from oms.schemas.rejection import Rejection

if TYPE_CHECKING:
    from oms.settings import StrategySettings

log = structlog.get_logger(__name__)

STRATEGY_GROUP = "oms.strategies"
BUILTIN_SOURCES: dict[str, str] = {
    "twap": "oms.algos.twap:TwapStrategy",
    "chase": "oms.algos.chase:ChaseStrategy",
    "sor": "oms.algos.sor:SorStrategy",
}


@dataclass(frozen=True)
class LoadedStrategy:
    """One loaded version of a strategy."""

    name: str
    version: str
    source: str
    strategy: ExecutionStrategy
    module_name: str  # its private module copy in sys.modules

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)


@dataclass(frozen=True)
class LoadError:
    """Why a version of a strategy was refused."""

    name: str
    version: str
    source: str
    message: str
    reason_code: ReasonCode = ReasonCode.STRATEGY_REFUSED


@dataclass
class RefreshReport:
    """What one check of the sources changed."""

    loaded: list[tuple[str, str]] = field(default_factory=list)  # (name, version)
    refused: list[LoadError] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # old versions let go


@dataclass(frozen=True)
class _Wanted:
    name: str
    source: str
    settings: dict[str, Any]


@dataclass
class _Prepared:
    """The result of the blocking half of a check (files read, new versions executed)."""

    wanted: dict[str, _Wanted]
    loaded: list[LoadedStrategy] = field(default_factory=list)
    refused: list[LoadError] = field(default_factory=list)


class StrategyRegistry:
    """The execution strategies a worker can run, by name and version."""

    def __init__(
        self,
        sources: Mapping[str, str] | None = None,
        *,
        entry_points: Iterable[EntryPoint] = (),
        discover: bool = False,
        search_path: list[str] | None = None,
        config_file: Path | None = None,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        builtins: bool = True,
    ) -> None:
        """``discover``: also read the ``oms.strategies`` entry points of the installed
        distributions (or of those under ``search_path``); ``entry_points``: ones given
        explicitly (tests, or a stale install). Call :meth:`refresh` to load."""
        self._sources = dict(sources or {})
        self._entry_points = list(entry_points)
        self._discover = discover
        self._search_path = search_path
        self._config_file = config_file
        self._settings = {name: dict(values) for name, values in (settings or {}).items()}
        self._builtins = builtins
        self._current: dict[str, LoadedStrategy] = {}
        self._versions: dict[tuple[str, str], LoadedStrategy] = {}
        self._holders: dict[tuple[str, str], set[str]] = {}
        self._held_by: dict[str, tuple[str, str]] = {}
        # Versions refused, so a broken file is reported once, not at every check.
        self._refused: dict[tuple[str, str], LoadError] = {}
        self._last_error: dict[str, LoadError] = {}

    @classmethod
    def from_settings(cls, settings: StrategySettings) -> StrategyRegistry:
        """The registry the worker runs with (not loaded yet)."""
        return cls(
            settings.sources,
            discover=settings.entry_points,
            config_file=settings.config_file,
            settings=settings.settings,
        )

    @classmethod
    def builtin(cls) -> StrategyRegistry:
        """The built-in strategies (TWAP, chase, smart order routing), loaded."""
        registry = cls()
        registry.refresh()
        return registry

    # -- lookups -----------------------------------------------------------------------------

    def current(self, name: str) -> LoadedStrategy | None:
        """The version new orders get; None: not loaded (unknown, refused or unloaded)."""
        return self._current.get(name)

    def get(self, name: str, version: str) -> LoadedStrategy | None:
        """That exact version, while it is current or held by an order."""
        return self._versions.get((name, version))

    @property
    def names(self) -> list[str]:
        return sorted(self._current)

    def error(self, name: str) -> LoadError | None:
        """Why the latest version of ``name`` was refused (None: it was not)."""
        return self._last_error.get(name)

    def params_model(self, name: str) -> type[BaseModel] | Rejection:
        """The parameters' model of the current version of ``name``, or why an order
        naming it cannot be accepted (``unknown_strategy``)."""
        loaded = self._current.get(name)
        if loaded is not None:
            return loaded.strategy.params_model
        error = self._last_error.get(name)
        why = (
            f"it was refused at load ({error.message})"
            if error is not None
            else f"known strategies: {', '.join(self.names) or 'none'}"
        )
        return Rejection(
            ReasonCode.UNKNOWN_STRATEGY, f"metadata.algo: {name!r} is not a loaded strategy; {why}"
        )

    def describe(self) -> dict[str, Any]:
        """For the worker's stats: current versions, old ones still held, refusals."""
        return {
            "current": {name: s.version for name, s in sorted(self._current.items())},
            "held": {
                f"{name}@{version}": len(self._holders.get((name, version), ()))
                for name, version in self._versions
            },
            "refused": {name: e.message for name, e in self._last_error.items()},
        }

    # -- orders in flight --------------------------------------------------------------------

    def hold(self, order_id: str, loaded: LoadedStrategy) -> None:
        """``order_id`` runs this version: keep it alive until :meth:`release`."""
        key = loaded.key
        previous = self._held_by.get(order_id)
        if previous == key:
            return
        if previous is not None:
            self.release(order_id)
        self._held_by[order_id] = key
        self._holders.setdefault(key, set()).add(order_id)

    def release(self, order_id: str) -> None:
        """``order_id`` no longer runs its version; an old version nobody holds is dropped."""
        key = self._held_by.pop(order_id, None)
        if key is None:
            return
        holders = self._holders.get(key)
        if holders is not None:
            holders.discard(order_id)
            if not holders:
                del self._holders[key]
                self._drop_if_retired(key)

    @property
    def holds(self) -> int:
        return len(self._held_by)

    # -- loading -----------------------------------------------------------------------------

    def refresh(self) -> RefreshReport:
        """Load what is new or changed, unload what is gone (blocking: files are read)."""
        return self._apply(self._prepare())

    async def refresh_async(self) -> RefreshReport:
        """:meth:`refresh` with its file reads and module executions in a thread."""
        prepared = await asyncio.to_thread(self._prepare)
        return self._apply(prepared)

    def _wanted(self) -> dict[str, _Wanted]:
        sources: dict[str, str] = dict(BUILTIN_SOURCES) if self._builtins else {}
        found: list[EntryPoint] = []
        if self._discover:
            if self._search_path is None:
                found = list(entry_points(group=STRATEGY_GROUP))
            else:
                for dist in distributions(path=self._search_path):
                    found.extend(dist.entry_points.select(group=STRATEGY_GROUP))
        for point in [*found, *self._entry_points]:
            sources[point.name] = point.value
        sources.update(self._sources)
        settings = {name: dict(values) for name, values in self._settings.items()}
        disabled: set[str] = set()
        for name, entry in self._read_config().items():
            if "source" in entry:
                sources[name] = str(entry["source"])
            if "settings" in entry:
                settings[name] = dict(entry["settings"])
            if entry.get("enabled", True) is False:
                disabled.add(name)
        return {
            name: _Wanted(name, source, settings.get(name, {}))
            for name, source in sources.items()
            if name not in disabled
        }

    def _read_config(self) -> dict[str, dict[str, Any]]:
        if self._config_file is None or not self._config_file.exists():
            return {}
        try:
            data = json.loads(self._config_file.read_text())
            if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
                raise ValueError("expected {name: {source?, settings?, enabled?}}")
        except (OSError, ValueError) as exc:
            # A bad edit of the file changes nothing: the strategies loaded stay.
            log.error("strategies file unreadable", path=str(self._config_file), error=str(exc))
            raise _KeepEverything from exc
        return data

    def _prepare(self) -> _Prepared | None:
        try:
            wanted = self._wanted()
        except _KeepEverything:
            return None
        prepared = _Prepared(wanted)
        for want in wanted.values():
            located = _locate(want)
            if isinstance(located, LoadError):
                prepared.refused.append(located)
                continue
            key = (want.name, located.version)
            current = self._current.get(want.name)
            if current is not None and current.version == located.version:
                continue  # unchanged
            if key in self._refused:
                prepared.refused.append(self._refused[key])  # broken as before: not run again
                continue
            existing = self._versions.get(key)  # back to a version an order still holds
            outcome = existing if existing is not None else _instantiate(want, located)
            if isinstance(outcome, LoadError):
                prepared.refused.append(outcome)
            else:
                prepared.loaded.append(outcome)
        return prepared

    def _apply(self, prepared: _Prepared | None) -> RefreshReport:
        report = RefreshReport()
        if prepared is None:
            return report
        for error in prepared.refused:
            key = (error.name, error.version)
            known = self._last_error.get(error.name)
            self._last_error[error.name] = error
            if error.version != "-":
                self._refused[key] = error
            if known == error:
                continue  # reported already
            report.refused.append(error)
            log.error(
                "strategy refused",
                strategy=error.name,
                version=error.version,
                source=error.source,
                reason_code=error.reason_code.value,
                error=error.message,
                serving=getattr(self._current.get(error.name), "version", None),
            )
        for loaded in prepared.loaded:
            previous = self._current.get(loaded.name)
            if previous is not None and previous.version == loaded.version:
                continue
            self._current[loaded.name] = loaded
            self._versions[loaded.key] = loaded
            self._last_error.pop(loaded.name, None)
            report.loaded.append(loaded.key)
            log.info("strategy loaded", strategy=loaded.name, version=loaded.version)
            if previous is not None:
                report.dropped.extend(self._drop_if_retired(previous.key))
        for name in [n for n in self._current if n not in prepared.wanted]:
            gone = self._current.pop(name)
            report.unloaded.append(name)
            log.info("strategy unloaded", strategy=name, version=gone.version)
            report.dropped.extend(self._drop_if_retired(gone.key))
        for name in [n for n in self._last_error if n not in prepared.wanted]:
            del self._last_error[name]
        return report

    def _drop_if_retired(self, key: tuple[str, str]) -> list[tuple[str, str]]:
        name, version = key
        current = self._current.get(name)
        if (current is not None and current.version == version) or self._holders.get(key):
            return []
        loaded = self._versions.pop(key, None)
        if loaded is None:
            return []
        _forget_module(loaded.module_name)
        log.info("strategy version dropped", strategy=name, version=version)
        return [key]


class _KeepEverything(Exception):
    """The sources cannot be read now: change nothing."""


@dataclass(frozen=True)
class _Located:
    origin: Path
    version: str
    module_name: str
    attr: str


def _locate(want: _Wanted) -> _Located | LoadError:
    """Find the strategy's module file and its version (blocking: the file is read)."""
    module_part, _, attr = want.source.rpartition(":")
    if not module_part or not attr:
        message = "source must be 'package.module:attr' or '/path/file.py:attr'"
        return LoadError(want.name, "-", want.source, message)
    is_file = module_part.endswith(".py") or "/" in module_part
    try:
        if is_file:
            origin = Path(module_part).resolve()
        else:
            spec = importlib.util.find_spec(module_part)
            if spec is None or spec.origin is None:
                raise ModuleNotFoundError(f"no module named {module_part!r}")
            origin = Path(spec.origin)
        code = origin.read_bytes()
    except (Exception, SystemExit) as exc:
        return LoadError(want.name, "-", want.source, f"{type(exc).__name__}: {exc}")
    version = _version(want, code)
    # A sibling of the real module, so its relative imports work.
    base = f"oms_strategy_{want.name}" if is_file else module_part
    return _Located(origin, version, f"{base}__v{version}", attr)


def _instantiate(want: _Wanted, located: _Located) -> LoadedStrategy | LoadError:
    """Execute a private copy of the module and build the strategy (blocking)."""
    try:
        module = _execute(located.module_name, located.origin)
    except (Exception, SystemExit) as exc:
        return LoadError(want.name, located.version, want.source, f"{type(exc).__name__}: {exc}")
    try:
        strategy = _build(module, located.attr, want.settings)
    except (Exception, SystemExit) as exc:
        _forget_module(located.module_name)
        return LoadError(want.name, located.version, want.source, f"{type(exc).__name__}: {exc}")
    return LoadedStrategy(want.name, located.version, want.source, strategy, located.module_name)


def _version(want: _Wanted, code: bytes) -> str:
    digest = hashlib.sha256(want.source.encode())
    digest.update(code)
    digest.update(json.dumps(want.settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:12]


def _execute(module_name: str, origin: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, origin)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {origin}")
    module = importlib.util.module_from_spec(spec)
    # In sys.modules while it runs: dataclasses and pydantic look their module up there.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _build(module: ModuleType, attr: str, settings: Mapping[str, Any]) -> ExecutionStrategy:
    target = getattr(module, attr, None)
    if target is None:
        raise AttributeError(f"module has no attribute {attr!r}")
    if isinstance(target, type):
        _check_shape(target)  # before running the constructor: the clearer reason
        target = target(dict(settings))
    elif callable(target) and not _has_hooks(target):
        target = target(dict(settings))  # a factory
    _check_shape(target)
    strategy: ExecutionStrategy = target
    return strategy


def _check_shape(target: object) -> None:
    missing = [hook for hook in HOOKS if not callable(getattr(target, hook, None))]
    if missing:
        raise TypeError(f"missing hooks: {', '.join(missing)}")
    model = getattr(target, "params_model", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"params_model must be a pydantic model class, got {model!r}")


def _has_hooks(target: object) -> bool:
    return all(callable(getattr(target, hook, None)) for hook in HOOKS)


def _forget_module(module_name: str) -> None:
    sys.modules.pop(module_name, None)
