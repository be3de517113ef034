"""``oms bench hostile``: hostile messages mixed with valid orders on the request topic of a
real worker (also the ``hostile`` chaos scenario).

The hostile messages are generated with hypothesis (``hostile_messages``): bytes that are not
JSON or not UTF-8, JSON that is not an object, truncated JSON, payloads over the 64 KiB
limit, requests with wrongly typed fields, unicode (RTL marks, zero-width joiners, emoji,
NULs) and injection strings (SQL, template, log/CRLF, path traversal, JNDI, HTML) in
labels (``request_id``, ``account_id``, ``order_id``) and metadata, and well-formed requests
carrying those strings that intake must refuse on their merits (unknown account, amount not
positive, unknown instrument, unknown order).

A stack like ``bench e2e`` / ``bench chaos`` (own broker or ``bootstrap``, paper exchange,
gateway, one worker) receives them interleaved with valid orders (half marketable, expected
``filled``; half resting far from the market, expected ``open``). Verdict:

* zero worker crashes: the worker process is alive, was started once, and answers /health;
* every hostile message has an outcome with a reason code: a dead letter pointing at its own
  partition and offset, or a ``rejected`` / ``command_rejected`` event for the order it
  names (requests that parse but are refused on their merits);
* every valid order reaches its expected status;
* the exchange holds exactly the valid orders' labels, each once (no hostile request was
  executed, no valid one twice).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from hypothesis import strategies as st

from oms.auth.signing import RequestSigner, sign_headers
from oms.kafka.reading import topic_partitions
from oms.kafka.security import as_connection
from oms.orders.validation import MAX_REQUEST_BYTES, ParseFailure, parse_request
from oms.schemas import DeadLetter, OrderEvent, OrderRequest, OrderStatus, Topic
from oms.secrets import SigningKeys
from oms_dev.harness import (
    OmsServices,
    isolated_settings,
    paper_admin,
    start_bench_broker,
    start_paper_stack,
)

INJECTIONS = (
    "'; DROP TABLE orders; --",
    '" OR 1=1 --',
    "1' UNION SELECT secret FROM system.users --",
    "{{7*7}}",
    "${jndi:ldap://127.0.0.1/x}",
    "<script>alert(1)</script>",
    "../../../../etc/passwd",
    "line\r\nlevel=error event=forged",
    "\x00\x01\x02",
    "%s%s%s%n",
    "\u202eevil\u202c",
    "a\u200db\u200bc",
    "🚀💥🔥",
    "Ω≈ç√∫µ≤≥÷",
    "ﷺ" * 20,
    "\ud7ff\ue000\uffff",
)
# Weighted by repetition: oversized payloads are fewer (each costs up to 128 KiB of Kafka).
KINDS = (
    "not_json", "not_json", "not_utf8", "truncated", "not_object", "huge", "wrong_type",
    "wrong_type", "hostile_label", "hostile_label", "hostile_metadata", "hostile_metadata",
    "refused_on_merits", "refused_on_merits",
)  # fmt: skip
# JSON numbers orjson can write (hypothesis also draws integers beyond 64 bits).
_ints = st.integers(-(2**63), 2**63 - 1)
FIELDS = ("request_id", "account_id", "order_id", "instrument_name", "direction", "order_type",
          "amount", "price", "metadata", "conditions", "command", "priority")  # fmt: skip


@dataclass
class HostileConfig:
    hostile: int = 10_000
    valid: int = 500
    accounts: int = 20
    partitions: int = 8
    seed: int = 8
    timeout_s: float = 300.0
    bootstrap: str | None = None


@dataclass
class Planned:
    """One message to publish and what must come of it."""

    kind: str
    value: bytes
    key: bytes | None
    # For a message that parses: the order it names (its rejection event is the outcome).
    order_id: str | None = None


# --- generation ---------------------------------------------------------------------------


def _hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(INJECTIONS), st.text(min_size=1, max_size=80))


def _base_request(account: str, uid: str) -> dict[str, Any]:
    return {
        "request_id": f"h-{uid[:12]}",
        "account_id": account,
        "instrument_name": "BTC-PERPETUAL",
        "amount": 10.0,
        "direction": "buy",
        "order_type": "limit",
        "price": 1_000.0,
    }


@st.composite
def hostile_message(draw: st.DrawFn, accounts: list[str]) -> tuple[str, bytes]:
    """One hostile message: (kind, bytes)."""
    kind = draw(st.sampled_from(KINDS))
    account = draw(st.sampled_from(accounts))
    # Ids from hypothesis too, so a seed reproduces every byte.
    uid = draw(st.uuids()).hex
    base = _base_request(account, uid)
    if kind == "not_json":
        text = draw(st.text(max_size=200))
        body = text.encode("utf-8", "surrogatepass")
        if not body.strip() or body.strip()[:1] in b'{["-0123456789tfn':
            body = b"}" + body  # never accidentally valid JSON
        return kind, body
    if kind == "not_utf8":
        prefix = draw(st.binary(max_size=50))
        return kind, prefix + b"\xff\xfe\xc3(" + draw(st.binary(max_size=50))
    if kind == "truncated":
        body = orjson.dumps(base)
        return kind, body[: draw(st.integers(1, len(body) - 1))]
    if kind == "not_object":
        value = draw(
            st.one_of(
                st.lists(_ints, max_size=5), _ints, st.text(max_size=30),
                st.booleans(), st.none(), st.floats(allow_nan=False, allow_infinity=False),
            )
        )  # fmt: skip
        return kind, orjson.dumps(value)
    if kind == "huge":
        size = draw(st.integers(MAX_REQUEST_BYTES + 1, 2 * MAX_REQUEST_BYTES))
        char = draw(st.sampled_from(("x", "é", "🚀")))
        base["metadata"] = {"blob": char * (size // len(char.encode()))}
        return kind, orjson.dumps(base)
    if kind == "wrong_type":
        field = draw(st.sampled_from(FIELDS))
        base[field] = draw(
            st.one_of(
                st.lists(_ints, min_size=1, max_size=3),
                st.dictionaries(st.text(max_size=5), _ints, min_size=1, max_size=3),
                st.sampled_from(("ten", "NaN-ish", "", "1e999x", "🚀")),
                st.just(True),
            )
        )
        return kind, orjson.dumps(base)
    if kind == "hostile_label":
        field = draw(st.sampled_from(("request_id", "account_id", "order_id")))
        base[field] = draw(_hostile_text())
        return kind, orjson.dumps(base)
    if kind == "hostile_metadata":
        # Well-formed apart from hostile strings in metadata; an unknown account, or amount
        # not positive, so intake refuses it on its merits after parsing.
        base["metadata"] = draw(
            st.dictionaries(_hostile_text(), _hostile_text(), min_size=1, max_size=8)
        )
        if draw(st.booleans()):
            base["account_id"] = f"ghost-{uid[-8:]}"
        else:
            base["amount"] = draw(st.sampled_from((0.0, -10.0, -1e300)))
        return kind, orjson.dumps(base)
    # refused_on_merits: parses; refused for what it asks.
    variant = draw(st.sampled_from(("unknown_account", "bad_amount", "unknown_instrument",
                                    "cancel_unknown")))  # fmt: skip
    if variant == "unknown_account":
        base["account_id"] = f"ghost-{uid[-8:]}"
    elif variant == "bad_amount":
        base["amount"] = draw(st.sampled_from((0.0, -1.0, 3.0, 1e-9)))
    elif variant == "unknown_instrument":
        base["instrument_name"] = draw(st.sampled_from(("FAKE-PERPETUAL", "BTC-1JAN99", "X")))
    else:
        base = {"command": "cancel", "request_id": base["request_id"], "account_id": account,
                "order_id": f"o-{uid[-16:]}"}  # fmt: skip
    return kind, orjson.dumps(base)


def generate_hostile(n: int, accounts: list[str], seed: int) -> list[tuple[str, bytes]]:
    """``n`` hostile messages drawn with hypothesis (reproducible per seed)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    out: list[tuple[str, bytes]] = []
    round_ = 0
    while len(out) < n:

        @hseed(seed + round_)
        @settings(
            max_examples=n - len(out), database=None, phases=[Phase.generate], deadline=None,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        @given(hostile_message(accounts))
        def collect(message: tuple[str, bytes]) -> None:
            if len(out) < n:
                out.append(message)

        collect()
        round_ += 1
    return out


def could_execute(request: OrderRequest, accounts: set[str]) -> bool:
    """Whether a parsed request might pass intake (a known account submitting a sane
    BTC-PERPETUAL amount): such a message is not hostile."""
    amount = request.amount or 0
    return (
        request.account_id in accounts
        and request.command.value == "submit"
        and request.instrument_name == "BTC-PERPETUAL"
        and amount > 0
        and amount % 10 == 0
    )


def plan_messages(
    hostile: list[tuple[str, bytes]], valid: list[OrderRequest], accounts: set[str], seed: int
) -> tuple[list[Planned], dict[str, OrderStatus]]:
    """Interleave hostile and valid messages; the expected status of each valid order.

    A hostile message that parses must name an order whose rejection is its outcome; one
    that could be a *valid* order for a known account (hypothesis found a lax coercion, say)
    is not hostile and is left out."""
    import random

    planned = []
    for kind, value in hostile:
        parsed = parse_request(value)
        order_id: str | None = None
        key: bytes | None = None
        if not isinstance(parsed, ParseFailure):
            order_id = parsed.key
            key = order_id.encode()
            if could_execute(parsed, accounts):
                continue
        elif parsed.identity is not None:
            key = parsed.identity["order_id"].encode()
        planned.append(Planned(kind, value, key, order_id))
    expected: dict[str, OrderStatus] = {}
    for i, request in enumerate(valid):
        expected[request.key] = OrderStatus.FILLED if i % 2 == 0 else OrderStatus.OPEN
        planned.append(Planned("valid", request.to_bytes(), request.key.encode(), request.key))
    random.Random(seed).shuffle(planned)
    return planned, expected


def signature_of(value: bytes, signer: RequestSigner) -> list[tuple[str, bytes]]:
    """Headers signing ``value`` with its account's key when it parses as a request of an
    account that has one: the OMS runs signed, and a hostile request must be refused for
    what is wrong with it, not only for being unsigned."""
    parsed = parse_request(value)
    if isinstance(parsed, ParseFailure):
        return []
    key = signer.key_of(parsed.account_id)
    return sign_headers(value, key) if key is not None else []


def valid_orders(n: int, accounts: list[str], run: str) -> list[OrderRequest]:
    """Even: marketable (filled against the paper market); odd: resting far away (open)."""
    out = []
    for i in range(n):
        marketable = i % 2 == 0
        buy = i % 4 < 2
        out.append(
            OrderRequest(
                request_id=f"{run}-{i}", account_id=accounts[i % len(accounts)],
                instrument_name="BTC-PERPETUAL", amount=10.0,
                direction="buy" if buy else "sell",
                order_type="market" if marketable else "limit",
                price=None if marketable else (1_000.0 if buy else 1_000_000.0),
            )
        )  # fmt: skip
    return out


# --- collecting outcomes --------------------------------------------------------------------


class OutcomeCollector:
    """Dead letters by source (partition, offset) and order events by order id, read from the
    end of both topics."""

    def __init__(self, bootstrap: str, dead_topic: str, events_topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            **as_connection(bootstrap).aiokafka(),
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 << 20,
        )
        self._topics = (dead_topic, events_topic)
        self.dead: dict[tuple[int, int], DeadLetter] = {}
        self.events: dict[str, list[OrderEvent]] = {}
        self.unreadable = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        tps = []
        for topic in self._topics:
            tps += await topic_partitions(self._consumer, topic)
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        dead_topic = self._topics[0]
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5_000)
            for tp, messages in batch.items():
                for message in messages:
                    try:
                        if tp.topic == dead_topic:
                            letter = DeadLetter.from_bytes(message.value or b"")
                            if (
                                letter.source_partition is not None
                                and letter.source_offset is not None
                            ):
                                self.dead[(letter.source_partition, letter.source_offset)] = letter
                        else:
                            event = OrderEvent.from_bytes(message.value or b"")
                            self.events.setdefault(event.order_id, []).append(event)
                    except ValueError:
                        self.unreadable += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._consumer.stop()


def _rejection(events: list[OrderEvent]) -> OrderEvent | None:
    """The first event refusing the request with a reason code (hostile order ids are
    unique, so any such event is this message's outcome)."""
    return next((e for e in events if e.reason_code is not None), None)


# --- the scenario ---------------------------------------------------------------------------


async def run_hostile(
    config: HostileConfig, on_status: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the scenario; ``ok`` says whether every check held."""
    base = Path(tempfile.mkdtemp(prefix="oms-bench-hostile-"))
    accounts = [f"hostile-{i}" for i in range(config.accounts)]
    on_status(f"generating {config.hostile} hostile messages (hypothesis)")
    t_gen = time.monotonic()
    # A few spare: the rare draw that could execute is left out (see plan_messages).
    spare = config.hostile + config.hostile // 20 + 10
    drawn = await asyncio.to_thread(generate_hostile, spare, accounts, config.seed)
    generated_s = time.monotonic() - t_gen
    run = f"ok-{uuid.uuid4().hex[:6]}"
    planned, expected = plan_messages(
        drawn, valid_orders(config.valid, accounts, run), set(accounts), config.seed
    )
    hostile_planned = [p for p in planned if p.kind != "valid"]
    # Draws that parse into an order intake could execute: not sent (they would trade), but
    # reported, since a *wrong_type* one is a type the schema coerced (e.g. price: true).
    kept = {p.value for p in hostile_planned}
    left_out: Counter[str] = Counter()
    coerced: list[str] = []
    for kind, value in drawn:
        if value not in kept:
            left_out[kind] += 1
            if kind == "wrong_type" and len(coerced) < 5:
                coerced.append(value[:200].decode(errors="replace"))
    extra = {id(p) for p in hostile_planned[config.hostile :]}
    planned = [p for p in planned if id(p) not in extra]
    broker, bootstrap = await start_bench_broker(
        base, config.partitions, config.bootstrap, on_status
    )
    services: OmsServices | None = None
    try:
        settings = isolated_settings(
            base, bootstrap, accounts, partitions=config.partitions, label="hostile"
        )
        services, worker = await start_paper_stack(settings, base / "logs", on_status)

        collector = OutcomeCollector(
            bootstrap, settings.topic(Topic.DEAD_LETTERS), settings.topic(Topic.ORDER_EVENTS)
        )
        await collector.start()
        topic = settings.topic(Topic.ORDER_REQUESTS)
        producer = AIOKafkaProducer(
            **as_connection(bootstrap).aiokafka(), linger_ms=5, acks="all", max_request_size=1 << 20
        )
        await producer.start()
        offsets: list[tuple[int, int]] = []
        try:
            on_status(f"publishing {len(planned)} messages ({config.valid} valid)")
            t0 = time.monotonic()
            signer = RequestSigner(SigningKeys(settings.resolved_secrets_file))
            futures = [
                await producer.send(
                    topic, value=p.value, key=p.key, headers=signature_of(p.value, signer)
                )
                for p in planned
            ]
            metadata = await asyncio.gather(*futures)
            offsets = [(m.partition, m.offset) for m in metadata]
            published_s = time.monotonic() - t0

            def settled() -> bool:
                for p, where in zip(planned, offsets, strict=True):
                    if p.kind == "valid":
                        assert p.order_id is not None
                        statuses = {e.status for e in collector.events.get(p.order_id, [])}
                        if expected[p.order_id] not in statuses:
                            return False
                    elif where not in collector.dead and not (
                        p.order_id and _rejection(collector.events.get(p.order_id, []))
                    ):
                        return False
                return True

            on_status("waiting for every outcome")
            deadline = time.monotonic() + config.timeout_s
            # Polled: settling is a property of two topics read by the collector.
            while time.monotonic() < deadline and not settled():  # noqa: ASYNC110
                await asyncio.sleep(1.0)
            elapsed = time.monotonic() - t0
            await asyncio.sleep(2.0)  # a late duplicate would show
        finally:
            await producer.stop()
            await collector.stop()

        on_status("checking the worker and the exchange")
        stats = await paper_admin(settings, "admin/get_stats", include_labels=True)
        health_ok = False
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{settings.worker.web_port}/health") as resp,
            ):
                health_ok = resp.status == 200
        except aiohttp.ClientError:
            pass
        return _verdict(
            config, planned, offsets, expected, collector, stats,
            worker_alive=worker.alive, worker_starts=worker.starts, health_ok=health_ok,
            seconds=elapsed, published_s=published_s, generated_s=generated_s, left_out=left_out,
            coerced=coerced,
        )  # fmt: skip
    finally:
        if services is not None:
            services.stop_all()
        if broker is not None:
            await broker.astop()


def _verdict(
    config: HostileConfig,
    planned: list[Planned],
    offsets: list[tuple[int, int]],
    expected: dict[str, OrderStatus],
    collector: OutcomeCollector,
    stats: dict[str, Any],
    *,
    worker_alive: bool,
    worker_starts: int,
    health_ok: bool,
    seconds: float,
    published_s: float,
    generated_s: float,
    left_out: Counter[str],
    coerced: list[str],
) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    dead_lettered = rejected = 0
    no_outcome: list[str] = []
    wrong_valid: list[str] = []
    missing_reason = 0
    for p, where in zip(planned, offsets, strict=True):
        if p.kind == "valid":
            assert p.order_id is not None
            statuses = [e.status for e in collector.events.get(p.order_id, []) if e.status]
            if expected[p.order_id] not in statuses or OrderStatus.REJECTED in statuses:
                wrong_valid.append(p.order_id)
            continue
        kinds[p.kind] += 1
        letter = collector.dead.get(where)
        event = _rejection(collector.events.get(p.order_id, [])) if p.order_id else None
        if letter is not None:
            dead_lettered += 1
            reasons[letter.reason_code.value] += 1
            if not letter.error:
                missing_reason += 1
        elif event is not None:
            rejected += 1
            assert event.reason_code is not None
            reasons[event.reason_code.value] += 1
            if not event.message:
                missing_reason += 1
        else:
            no_outcome.append(f"{p.kind}@{where[0]}:{where[1]}: {p.value[:80]!r}")
    labels: dict[str, int] = stats.get("orders_by_label", {})
    valid_ids = set(expected)
    foreign = sorted(label for label in labels if label not in valid_ids)
    twice = sorted(label for label, n in labels.items() if n > 1)
    valid_missing = sorted(valid_ids - labels.keys())
    crashes = 0 if (worker_alive and worker_starts == 1 and health_ok) else 1
    ok = not (crashes or no_outcome or wrong_valid or foreign or twice or missing_reason
              or stats.get("duplicate_labels"))  # fmt: skip
    return {
        "ok": ok,
        "hostile": sum(kinds.values()),
        "valid": config.valid,
        "hostile_kinds": dict(sorted(kinds.items())),
        "drawn_but_could_execute": dict(sorted(left_out.items())),
        "generated_s": round(generated_s, 1),
        "published_s": round(published_s, 1),
        "seconds": round(seconds, 1),
        "messages_per_s": round((config.hostile + config.valid) / seconds, 1) if seconds else None,
        "worker_crashes": crashes,
        "worker_alive": worker_alive,
        "hostile_dead_lettered": dead_lettered,
        "hostile_rejected_with_event": rejected,
        "hostile_without_outcome": len(no_outcome),
        "outcomes_without_reason_text": missing_reason,
        "reason_codes": dict(sorted(reasons.items())),
        "valid_not_ending_as_expected": len(wrong_valid),
        "valid_missing_at_exchange": len(valid_missing),
        "foreign_labels_at_exchange": len(foreign),
        "labels_twice_at_exchange": len(twice),
        "unreadable_outputs": collector.unreadable,
        "examples": {
            "without_outcome": no_outcome[:5],
            "wrong_valid": wrong_valid[:5],
            "foreign_labels": foreign[:5],
            "twice": twice[:5],
            "wrong_type_accepted_by_the_schema": coerced,
        },
    }


__all__ = ["HostileConfig", "generate_hostile", "hostile_message", "run_hostile"]
