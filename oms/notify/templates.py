"""Message templates in English and Chinese, short enough to read on a phone.

Accounts may override the line of any notification type (or ``digest``, the digest title)
with a ``str.format`` template over :data:`FIELDS`; a template that names an unknown field or
is malformed raises :class:`TemplateError` (recorded as ``template_error``).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from oms.notify.channels.base import Message
from oms.notify.model import Notice, Pending
from oms.schemas.notify_settings import NotificationSettings, NotificationType, Severity

FIELDS = (
    "account_id", "type", "type_label", "instrument", "side", "amount", "price", "filled",
    "avg_price", "status", "reason", "message", "time", "order_id", "severity",
)  # fmt: skip

TYPE_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "created": "Order created", "triggered": "Order triggered",
        "partially_filled": "Partially filled", "filled": "Filled", "cancelled": "Cancelled",
        "rejected": "Rejected", "expired": "Expired", "needs_review": "Needs review",
        "risk_state_changed": "Risk state changed", "large_loss": "LARGE LOSS",
        "system_error": "SYSTEM ERROR", "margin_call": "MARGIN CALL",
        "position_mismatch": "POSITION MISMATCH", "test": "Test notification",
    },
    "zh": {
        "created": "订单已创建", "triggered": "订单已触发", "partially_filled": "部分成交",
        "filled": "已成交", "cancelled": "已撤销", "rejected": "被拒绝", "expired": "已过期",
        "needs_review": "待人工审核", "risk_state_changed": "风控状态变化",
        "large_loss": "大额亏损", "system_error": "系统错误", "margin_call": "保证金告警",
        "position_mismatch": "持仓不一致", "test": "测试通知",
    },
}  # fmt: skip
STATUSES = {
    "zh": {
        "pending": "待处理", "waiting": "等待中", "queued": "排队中", "submitted": "已提交",
        "open": "挂单中", "partially_filled": "部分成交", "filled": "已成交",
        "cancelled": "已撤销", "rejected": "已拒绝", "expired": "已过期",
        "needs_review": "待审核",
    },
}  # fmt: skip
SIDES = {"en": {"buy": "BUY", "sell": "SELL"}, "zh": {"buy": "买入", "sell": "卖出"}}
WORDS = {
    "en": {
        "emergency": "[EMERGENCY]", "digest": "{count} notifications", "more": "… and {n} more",
        "ack": "Acknowledge: oms notify ack {alert_id}", "repeat": "repeat #{n}",
    },
    "zh": {
        "emergency": "【紧急】", "digest": "{count} 条通知汇总", "more": "… 另有 {n} 条",
        "ack": "确认告警: oms notify ack {alert_id}", "repeat": "第 {n} 次提醒",
    },
}  # fmt: skip
DEFAULT_LINE = (
    "{time} {type_label} {instrument} {side} {amount}{at_price}{status_part}{reason_part}{ref}"
)


class TemplateError(ValueError):
    """An account's template could not be rendered."""


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.8g}"


def fields_of(notice: Notice, lang: str, tz: ZoneInfo, severity: Severity) -> dict[str, Any]:
    """The template fields of one notice."""
    when = datetime.fromtimestamp(notice.timestamp / 1000, UTC).astimezone(tz)
    return {
        "account_id": notice.account_id,
        "type": notice.type.value,
        "type_label": TYPE_LABELS[lang].get(notice.type.value, notice.type.value),
        "instrument": notice.instrument_name or "",
        "side": SIDES[lang].get(notice.direction or "", notice.direction or ""),
        "amount": _num(notice.amount) if notice.amount is not None else "",
        "price": _num(notice.average_price or notice.price),
        "filled": _num(notice.filled_amount),
        "avg_price": _num(notice.average_price),
        "status": STATUSES.get(lang, {}).get(notice.status or "", notice.status or ""),
        "reason": notice.reason or "",
        "message": notice.message or "",
        "time": when.strftime("%m-%d %H:%M:%S"),
        "order_id": notice.order_id or "",
        "severity": severity.value,
    }


def render_line(notice: Notice, settings: NotificationSettings, severity: Severity) -> str:
    """One line about one notice, with the account's template if it has one."""
    lang = settings.language
    f = fields_of(notice, lang, ZoneInfo(settings.timezone), severity)
    custom = settings.templates.get(notice.type.value)
    if custom is not None:
        try:
            return custom.format_map(f)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise TemplateError(
                f"template for {notice.type.value!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
    price = f["price"] if notice.type is not NotificationType.CREATED else _num(notice.price)
    line = DEFAULT_LINE.format(
        **f,
        at_price=f" @ {price}" if price != "-" and notice.amount is not None else "",
        # The state only when it says more than the type ("Filled [filled]" does not).
        status_part=f" [{f['status']}]"
        if f["status"] and notice.status != notice.type.value
        else "",
        reason_part=f" ({f['reason']})" if f["reason"] else "",
        ref=f" #{notice.order_id}" if notice.order_id and notice.amount is not None else "",
    )
    if notice.message and (notice.type.is_emergency or notice.type is NotificationType.TEST):
        line += f"\n{notice.message}"
    return " ".join(part for part in line.split(" ") if part) if "\n" not in line else line


def render(pending: Pending, settings: NotificationSettings, idempotency_key: str) -> Message:
    """The message for a pending notification (one notice, or a digest of several)."""
    lang = settings.language
    words = WORDS[lang]
    tz = ZoneInfo(settings.timezone)
    notices = [Notice.from_dict(n) for n in pending.notices]
    lines = [render_line(n, settings, pending.severity) for n in notices]
    if pending.count > len(lines):
        lines.append(words["more"].format(n=pending.count - len(lines)))
    if pending.count == 1 and notices:
        first = fields_of(notices[0], lang, tz, pending.severity)
        title = " ".join(
            p
            for p in (first["type_label"], first["instrument"], first["side"], first["amount"])
            if p
        )
    else:
        title = words["digest"].format(count=pending.count)
        custom = settings.templates.get("digest")
        if custom is not None:
            try:
                title = custom.format(count=pending.count, account_id=pending.account_id)
            except (KeyError, IndexError, ValueError) as exc:
                raise TemplateError(f"digest template failed: {exc}") from exc
        parts = ", ".join(
            f"{TYPE_LABELS[lang].get(t, t)} {n}" for t, n in sorted(pending.types.items())
        )
        title = f"{title}: {parts}"
    if pending.emergency:
        title = f"{words['emergency']} {title}"
        if pending.repeat:
            title += f" ({words['repeat'].format(n=pending.repeat)})"
        if pending.alert_id:
            lines.append(words["ack"].format(alert_id=pending.alert_id))
    header = f"[{pending.account_id}] {title}"
    text = header + "\n" + "\n".join(lines)
    markdown_lines = [f"> {line}" if not line.startswith("…") else line for line in lines]
    color = {"critical": "warning", "warning": "warning", "info": "info"}[pending.severity.value]
    markdown = f'**<font color="{color}">{header}</font>**\n' + "\n".join(markdown_lines)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    body_html = f"<h3>{html.escape(header)}</h3><ul>{items}</ul>"
    sms = {
        "type": TYPE_LABELS[lang].get(pending.type.value, pending.type.value),
        "detail": lines[0] if lines else "",
        "count": str(pending.count),
    }
    return Message(
        title=header,
        text=text,
        markdown=markdown,
        html=body_html,
        severity=pending.severity,
        emergency=pending.emergency,
        idempotency_key=idempotency_key,
        sms_params=sms,
    )
