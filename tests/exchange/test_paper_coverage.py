"""The paper exchange README's coverage table is the one the method registry and the spec
give, and its "trading bots use it" column is what ccxt really calls."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

from oms.exchange.paper.coverage import (
    BOT_METHODS,
    END,
    README,
    START,
    coverage_markdown,
    implemented,
    load_spec,
    spec_methods,
    with_coverage,
)


def test_readme_table_is_up_to_date() -> None:
    readme = README.read_text()
    expected = with_coverage(readme, coverage_markdown(load_spec()))
    assert readme == expected, (
        "the coverage table in oms/exchange/paper/README.md is out of date: run "
        "python -m oms.exchange.paper.coverage --write"
    )


def test_table_lists_every_spec_method_once() -> None:
    spec = load_spec()
    methods = spec_methods(spec)
    assert len(methods) == len(spec["paths"]) == 173
    section = coverage_markdown(spec)
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == len(methods)
    done = [r for r in rows if "| yes |" in r.split("`")[2][:8]]
    assert len(done) == len(implemented() & methods.keys())
    assert implemented() <= methods.keys()  # the paper exchange invents no Deribit method
    assert f"**{len(done)} of the spec's 173 methods" in section


def test_section_markers_are_required() -> None:
    with pytest.raises(ValueError):
        with_coverage("no markers here", "table")
    assert with_coverage(f"a\n{START}\nold\n{END}\nb", "new") == f"a\n{START}\nnew\n{END}\nb"


def test_bot_methods_are_what_ccxt_calls() -> None:
    """ccxt's Deribit class calls its endpoints as ``self.privateGetGetOrderState(...)``;
    its pro class sends ``'method': 'public/subscribe'``. Wallet and sub-account calls are
    not a trading bot's."""
    rest = importlib.import_module("ccxt.async_support.deribit")
    pro = importlib.import_module("ccxt.pro.deribit")
    api = rest.deribit().describe()["api"]

    def camel(path: str) -> str:
        return "".join(part[:1].upper() + part[1:] for part in path.split("_"))

    names = {
        f"{access}{verb.capitalize()}{camel(path)}": f"{access}/{path}"
        for access, verbs in api.items() for verb, paths in verbs.items() for path in paths
    }
    called = set(re.findall(r"self\.((?:public|private)Get\w+)\(", inspect.getsource(rest)))
    streamed = set(re.findall(r"'method': '((?:public|private)/\w+)'", inspect.getsource(pro)))
    ccxt_methods = {names[c] for c in called} | streamed
    wallet = {m for m in ccxt_methods if re.search(r"deposit|withdraw|transfer|subaccount", m)}
    assert ccxt_methods - wallet == BOT_METHODS
