"""The ``oms`` command line."""

from __future__ import annotations

import typer

from oms.cli import orders, services

app = typer.Typer(
    name="oms",
    help="Order management system for Deribit on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

app.command("submit")(orders.submit)
app.command("cancel")(orders.cancel)
app.command("amend")(orders.amend)
app.command("orders")(orders.orders)
app.command("queue")(orders.queue)
app.add_typer(orders.watch_app, name="watch")
app.command("worker")(services.worker)
app.command("gateway")(services.gateway)
app.command("fanout")(services.fanout)


def _register_optional() -> None:
    # Parts built side by side; each registers when its module is present.
    import importlib

    for module, attr, name in (
        ("oms.cli.stack", "up", "up"),
        ("oms.cli.sink", "sink", "sink"),
        ("oms.cli.sql", "sql", "sql"),
        ("oms.cli.paper", "paper_exchange", "paper-exchange"),
        ("oms.cli.bench", "bench_app", "bench"),
        ("oms.cli.review", "review_app", "review"),
        ("oms.cli.stats", "stats", "stats"),
        ("oms.cli.risk", "risk_app", "risk"),
        ("oms.cli.notify", "notify_app", "notify"),
        ("oms.cli.positions", "positions_app", "positions"),
        ("oms.cli.chaos", "chaos_app", "chaos"),
        ("oms.cli.experiments", "experiments_app", "experiments"),
        ("oms.cli.tune", "tune_app", "tune"),
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        target = getattr(mod, attr)
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=name)
        else:
            app.command(name)(target)


_register_optional()

if __name__ == "__main__":
    app()
