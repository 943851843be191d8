"""Notifications for budget alerts: payloads, channel resolution, deliveries and sending.

A delivery is one alert sent to one channel. It is created `pending` (once per channel and alert, by
constraint), sent by a Celery task after the creating transaction commits, retried with exponential
backoff while the receiver fails, and ends `sent` or `failed`. Deliveries whose task was never
enqueued (broker down) or was lost are re-enqueued by `notification_deliveries_retry_pending`.

Sending is at least once: a receiver that answered 2xx too late (after our timeout) gets the same
delivery again; webhook receivers deduplicate on the `X-Chargeback-Delivery` header.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import smtplib
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from budgets.models import BudgetAlert, NotificationChannel, NotificationDelivery
from budgets.webhook_targets import (
    GuardedHTTPHandler,
    GuardedHTTPSHandler,
    TargetNotAllowed,
    target_url_check,
)
from chargeback import money
from tenants.models import Tenant
from tenants.selectors import tenant_ancestor_ids

logger = logging.getLogger(__name__)

PAYLOAD_TYPE_ALERT = "budget.threshold_crossed"
PAYLOAD_TYPE_TEST = "test"
USER_AGENT = "chargeback-notifications/1"
SIGNATURE_PREFIX = "sha256="
# A pending delivery never attempted this long after its last change lost its task (broker down).
RETRY_PENDING_AFTER = timedelta(minutes=1)
# A pending delivery between retries is re-enqueued only once its retry is surely lost: the
# longest backoff (600 s) plus a request timeout, with a margin.
RETRY_STALLED_AFTER = timedelta(minutes=15)
_ERROR_DETAIL_CHARS = 500
_HUNDREDTH = Decimal("0.01")


class DeliveryFailed(Exception):
    """A send attempt failed (non-2xx, network error, SMTP error); the attempt is recorded. Retryable."""


class DeliveryAbandoned(DeliveryFailed):
    """A send that retrying cannot fix (e.g. a target that is not an http(s) URL); the delivery is failed."""


class _SendError(Exception):
    def __init__(self, message: str, response_code: int | None = None):
        super().__init__(message)
        self.response_code = response_code


# Payloads


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _percent_used(spent_nanos: int, amount_nanos: int) -> str:
    hundredths = money.divide_half_even(spent_nanos * 10_000, amount_nanos)
    return format(Decimal(hundredths).scaleb(-2), "f")


def alert_payload(alert: BudgetAlert) -> dict[str, Any]:
    """The JSON document sent for an alert, to webhooks as is and rendered as text for Slack and e-mail."""
    budget = alert.budget
    return {
        "type": PAYLOAD_TYPE_ALERT,
        "alert_id": alert.pk,
        "budget": {"id": budget.pk, "name": budget.name, "tenant": budget.tenant.slug},
        "kind": str(alert.kind),
        "threshold_percent": format(Decimal(str(alert.threshold.percent)).quantize(_HUNDREDTH), "f"),
        "period": {"key": alert.period_key, "start": _iso(alert.period_start), "end": _iso(alert.period_end)},
        "spent_usd": money.nanos_to_str(alert.spent_nanos),
        "amount_usd": money.nanos_to_str(alert.amount_nanos),
        "forecast_usd": money.nanos_to_str(alert.forecast_nanos),
        "percent_used": _percent_used(alert.spent_nanos, alert.amount_nanos),
        "action": str(budget.action),
        "created_at": _iso(alert.created_at),
    }


def _test_payload(channel: NotificationChannel) -> dict[str, Any]:
    return {
        "type": PAYLOAD_TYPE_TEST,
        "channel": {
            "id": channel.pk,
            "name": channel.name,
            "kind": channel.kind,
            "tenant": channel.tenant.slug,
        },
        "message": "Test notification from chargeback. Budget alerts for this tenant will arrive here.",
        "created_at": _iso(timezone.now()),
    }


def _usd(value: str | None) -> str:
    """A decimal USD string for people: rounded half-even to cents, with thousands separators."""
    cents = money.divide_half_even(money.usd_to_nanos(value or "0"), money.NANOS_PER_CENT)
    return "$" + format(Decimal(cents).scaleb(-2), ",f")


def _summary(payload: dict[str, Any]) -> tuple[str, list[str]]:
    """A one-line summary and a few detail lines, for Slack and e-mail."""
    if "summary" in payload:
        # Payloads of other apps (anomalies, alert rules) carry their own text.
        return str(payload["summary"]), [str(line) for line in payload.get("details", [])]
    if payload.get("type") != PAYLOAD_TYPE_ALERT:
        channel = payload.get("channel", {})
        return (
            f"chargeback test notification for {channel.get('tenant')} ({channel.get('name')})",
            [payload.get("message", "")],
        )
    budget = payload["budget"]
    if payload["kind"] == BudgetAlert.Kind.FORECAST:
        amounts = f"forecast {_usd(payload['forecast_usd'])} of {_usd(payload['amount_usd'])}"
    else:
        amounts = f"{_usd(payload['spent_usd'])} of {_usd(payload['amount_usd'])} spent"
    summary = (
        f"Budget alert: {budget['tenant']} / {budget['name']} crossed {payload['threshold_percent']}% "
        f"({payload['kind']}): {amounts}"
    )
    period = payload["period"]
    details = [
        f"Spent so far: {_usd(payload['spent_usd'])} ({payload['percent_used']}% of the budget)",
        f"Period: {period['key']} ({period['start']} to {period['end']})",
        f"Action: {payload['action']}",
    ]
    return summary, details


# Channels and deliveries


def notification_channels_for_tenant(tenant: Tenant) -> list[NotificationChannel]:
    """The tenant's active channels; if it has none, those of its nearest ancestor that has some."""
    chain = tenant_ancestor_ids(tenant.pk)
    channels = NotificationChannel.objects.select_related("tenant").filter(
        tenant_id__in=chain, is_active=True
    )
    by_tenant: dict[int, list[NotificationChannel]] = {}
    for channel in channels.order_by("name", "pk"):
        by_tenant.setdefault(channel.tenant_id, []).append(channel)
    for tenant_id in chain:
        if tenant_id in by_tenant:
            return by_tenant[tenant_id]
    return []


def _enqueue_delivery(delivery_id: int) -> None:
    """Queue the send; if the broker is unreachable, leave the delivery pending for the retry job."""
    from budgets.tasks import notification_deliver_task  # the tasks module imports this one

    try:
        notification_deliver_task.delay(delivery_id)
    except Exception:  # kombu's OperationalError, or anything else the broker client raises
        logger.exception(
            "Could not enqueue notification delivery %s; it stays pending for retry", delivery_id
        )


@transaction.atomic
def notification_deliveries_create(*, alert: BudgetAlert) -> list[NotificationDelivery]:
    """One pending delivery of the alert per channel of its budget's tenant (or nearest ancestor).

    Idempotent: a delivery that already exists for a (channel, alert) is returned, not duplicated,
    even when evaluations race. Only new deliveries are sent, by a task queued after commit.
    """
    channels = notification_channels_for_tenant(alert.budget.tenant)
    if not channels:
        return []
    payload = alert_payload(alert)
    deliveries = []
    for channel in channels:
        delivery, created = NotificationDelivery.objects.get_or_create(
            channel=channel, alert=alert, defaults={"payload": payload}
        )
        deliveries.append(delivery)
        if created:
            transaction.on_commit(lambda delivery_id=delivery.pk: _enqueue_delivery(delivery_id))
    return deliveries


@transaction.atomic
def notification_deliveries_create_keyed(
    *, tenant: Tenant, dedupe_key: str, payload: dict[str, Any]
) -> list[NotificationDelivery]:
    """One pending delivery of `payload` per channel of `tenant` (or its nearest ancestor with
    channels), for notifications that are not budget alerts (anomalies, alert rules, digests).

    `dedupe_key` names what is notified (e.g. "anomaly:42:subscription:3"): a delivery that already
    exists for a (channel, key) is returned, not duplicated. The payload should carry `summary`
    (one line) and `details` (lines) for Slack and e-mail; webhooks receive it as is.
    """
    if not dedupe_key:
        raise ValueError("dedupe_key is required")
    channels = notification_channels_for_tenant(tenant)
    deliveries = []
    for channel in channels:
        delivery, created = NotificationDelivery.objects.get_or_create(
            channel=channel, dedupe_key=dedupe_key, defaults={"payload": payload}
        )
        deliveries.append(delivery)
        if created:
            transaction.on_commit(lambda delivery_id=delivery.pk: _enqueue_delivery(delivery_id))
    return deliveries


def notification_deliveries_retry_pending(*, now: datetime | None = None) -> int:
    """Re-enqueue pending deliveries whose task was never queued or was lost; returns how many.

    Never attempted: pending for over a minute. Attempted and awaiting a retry: only when nothing
    has happened to it for longer than any retry backoff. A duplicate task is harmless: a delivery
    that is no longer pending is not sent again, and concurrent attempts are claimed one at a time.
    """
    now = now or timezone.now()
    stale = Q(attempts=0, updated_at__lt=now - RETRY_PENDING_AFTER) | Q(
        attempts__gt=0, updated_at__lt=now - RETRY_STALLED_AFTER
    )
    delivery_ids = list(
        NotificationDelivery.objects.filter(stale, status=NotificationDelivery.Status.PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for delivery_id in delivery_ids:
        _enqueue_delivery(delivery_id)
    return len(delivery_ids)


# Sending


def webhook_signature(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """The `X-Chargeback-Signature` value: "sha256=" + hex HMAC-SHA256 of "{timestamp}.{body}"."""
    if isinstance(body, str):
        body = body.encode()
    message = f"{timestamp}.".encode() + body
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def webhook_signature_verify(
    secret: str,
    timestamp: int | str,
    body: bytes | str,
    signature: str,
    tolerance_seconds: int = 300,
    *,
    now: float | None = None,
) -> bool:
    """For receivers: the signature matches the secret, timestamp and raw body, and the timestamp is recent."""
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_seconds:
        return False
    expected = webhook_signature(secret, sent_at, body)
    return hmac.compare_digest(expected.encode(), (signature or "").encode())


def _opener() -> urllib.request.OpenerDirector:
    # http(s) only, and no redirects: a 3xx is an error like any other non-2xx answer (and cannot
    # lead to an internal address). The handlers connect only to addresses the target policy allows.
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        GuardedHTTPHandler(),
        GuardedHTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _check_url(url: str) -> None:
    try:
        target_url_check(url)
    except TargetNotAllowed as error:
        raise DeliveryAbandoned(str(error)) from error


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
    )
    try:
        with _opener().open(request, timeout=settings.NOTIFICATION_HTTP_TIMEOUT_SECONDS) as response:
            return response.status
    except TargetNotAllowed as error:  # checked before a request through a proxy
        raise DeliveryAbandoned(str(error)) from error
    except urllib.error.HTTPError as error:
        with error:
            detail = error.read(_ERROR_DETAIL_CHARS).decode(errors="replace").strip()
        raise _SendError(
            f"HTTP {error.code}: {detail}" if detail else f"HTTP {error.code}", error.code
        ) from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, TargetNotAllowed):  # checked when connecting: retrying cannot help
            raise DeliveryAbandoned(str(error.reason)) from error
        raise _SendError(f"{type(error).__name__}: {error}") from error
    except (http.client.HTTPException, OSError) as error:
        raise _SendError(f"{type(error).__name__}: {error}") from error


def _send_webhook(delivery: NotificationDelivery, channel: NotificationChannel) -> int:
    _check_url(channel.target)
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = int(time.time())
    headers = {"X-Chargeback-Delivery": str(delivery.pk), "X-Chargeback-Timestamp": str(timestamp)}
    if channel.secret:
        headers["X-Chargeback-Signature"] = webhook_signature(channel.secret, timestamp, body)
    return _post(channel.target, body, headers)


def _send_slack(delivery: NotificationDelivery, channel: NotificationChannel) -> int:
    _check_url(channel.target)
    summary, details = _summary(delivery.payload)
    body = json.dumps({"text": "\n".join([summary, *details])}).encode()
    return _post(channel.target, body, {})


def _send_email(delivery: NotificationDelivery, channel: NotificationChannel) -> None:
    recipients = [address.strip() for address in channel.target.split(",") if address.strip()]
    if not recipients:
        raise DeliveryAbandoned("no e-mail address")
    summary, details = _summary(delivery.payload)
    body = "\n".join(
        [
            summary,
            "",
            *details,
            "",
            "Details (JSON):",
            json.dumps(delivery.payload, indent=2, sort_keys=True),
            "",
            f"Delivery {delivery.pk} via channel {channel.name!r}.",
        ]
    )
    try:
        send_mail(summary, body, None, recipients, fail_silently=False)
    except (smtplib.SMTPException, OSError) as error:
        raise _SendError(f"{type(error).__name__}: {error}") from error


_SENDERS = {
    NotificationChannel.Kind.WEBHOOK: _send_webhook,
    NotificationChannel.Kind.SLACK: _send_slack,
    NotificationChannel.Kind.EMAIL: _send_email,
}


def _record(delivery: NotificationDelivery, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(delivery, name, value)
    delivery.save(update_fields=[*fields, "updated_at"])


def notification_deliver(*, delivery_id: int, final_attempt: bool = True) -> NotificationDelivery:
    """Send a pending delivery once and record the outcome (status, attempts, response code, error).

    A delivery that is no longer pending, or that another worker is sending right now, is returned
    unchanged (a duplicate task sends nothing). On failure the attempt is recorded and
    `DeliveryFailed` is raised; the delivery stays `pending` for a retry unless `final_attempt`, then
    it is `failed`. `DeliveryAbandoned` (retrying cannot help) always fails it. Runs outside a
    transaction: no row lock is held while waiting for a receiver.
    """
    delivery = NotificationDelivery.objects.select_related("channel__tenant").get(pk=delivery_id)
    if delivery.status != NotificationDelivery.Status.PENDING:
        return delivery
    channel = delivery.channel
    if (delivery.alert_id is not None or delivery.dedupe_key) and not channel.is_active:
        _record(delivery, status=NotificationDelivery.Status.FAILED, last_error="channel is inactive")
        return delivery

    # Claim this attempt: only one worker moves `attempts` from n to n + 1.
    claimed = NotificationDelivery.objects.filter(
        pk=delivery.pk, status=NotificationDelivery.Status.PENDING, attempts=delivery.attempts
    ).update(attempts=F("attempts") + 1, updated_at=timezone.now())
    if not claimed:
        delivery.refresh_from_db()
        return delivery
    delivery.attempts += 1

    try:
        response_code = _SENDERS[channel.kind](delivery, channel)
    except DeliveryAbandoned as error:
        _record(
            delivery, status=NotificationDelivery.Status.FAILED, response_code=None, last_error=str(error)
        )
        raise
    except _SendError as error:
        status = NotificationDelivery.Status.FAILED if final_attempt else NotificationDelivery.Status.PENDING
        _record(delivery, status=status, response_code=error.response_code, last_error=str(error))
        logger.warning(
            "Notification delivery %s to %s failed (attempt %s): %s",
            delivery.pk,
            channel,
            delivery.attempts,
            error,
        )
        raise DeliveryFailed(f"delivery {delivery.pk}: {error}") from error
    _record(delivery, status=NotificationDelivery.Status.SENT, response_code=response_code, last_error="")
    return delivery


def notification_channel_send_test(*, channel: NotificationChannel) -> NotificationDelivery:
    """Create a test delivery (no alert) for the channel and send it now, once; returns it sent or failed.

    Sends even when the channel is inactive, so that it can be checked before it is switched on.
    """
    delivery = NotificationDelivery.objects.create(
        channel=channel, alert=None, payload=_test_payload(channel)
    )
    try:
        return notification_deliver(delivery_id=delivery.pk, final_attempt=True)
    except DeliveryFailed:
        delivery.refresh_from_db()
        return delivery
