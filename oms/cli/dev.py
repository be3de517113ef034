"""The development commands (``oms up``, ``oms bench``, ``oms chaos``) and the package they
run: ``oms_dev``, which the development install provides (``make install``) and the service
image does not. They import it only when they run, and say so in one line when it is missing.
"""

from __future__ import annotations

import importlib

import typer

DEV_PACKAGE = "oms_dev"


def require_dev_install(command: str) -> None:
    """Exit 1 with ``<command> needs the development install: make install`` on stderr when
    the development package cannot be imported; return otherwise."""
    try:
        importlib.import_module(DEV_PACKAGE)
    except ImportError:
        typer.echo(f"{command} needs the development install: make install", err=True)
        raise typer.Exit(1) from None


def dev_commands(command: str, help: str) -> typer.Typer:
    """A command group (``command``: how it is typed, e.g. ``oms bench``) whose commands run
    code of the development package: each checks for it first
    (:func:`require_dev_install`)."""
    group = typer.Typer(help=help, no_args_is_help=True)

    @group.callback()
    def _needs_dev_install() -> None:
        require_dev_install(command)

    return group
