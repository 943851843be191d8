"""Statement documents: the PDF, the CSV of its lines and the FOCUS 1.2 cost export.

Everything here only reads a statement and its lines as stored. Amounts are the lines' rounded
cents, so every document adds up to the statement's total to the cent; a statement whose lines do
not add up to its total is refused (StatementTotalMismatch) rather than exported.

FOCUS 1.2 mapping (one row per statement line):

- BilledCost = EffectiveCost = ContractedCost = the line's amount in cents, as a decimal USD
  string; ΣBilledCost per InvoiceId is the statement total exactly.
- ListCost is the amount at list prices: the line amount for usage, tier/price-difference, shared
  and adjustment lines; 0 for markup lines (a markup or discount is exactly what list prices
  leave out), so ΣBilledCost - ΣListCost is the markup.
- ChargeCategory is Usage, except adjustment lines (late usage of an earlier, finalized month):
  Adjustment with ChargeClass Correction and ChargePeriod = the adjusted month. Shared-cost,
  markup and price-difference lines are Usage of the statement's month.
- Token lines: ConsumedQuantity = tokens, ConsumedUnit "Tokens"; PricingQuantity = tokens /
  unit_scale, PricingUnit "1000000 Tokens" (FOCUS unit format "<quantity> <plural units>"), and
  List/ContractedUnitPrice = the line's USD price per unit_scale tokens. Lines priced per request
  use "Requests". Amount-only lines of category Usage (markup, shared, price difference) have
  PricingQuantity 1 and PricingUnit "Charges", since FOCUS wants a pricing quantity on every
  Usage row; adjustment lines leave quantities and prices empty.
- ProviderName = PublisherName = the LLM provider (openai, anthropic, ...), or the statement
  issuer for lines that belong to no provider (markup, shared cost, adjustments).
- BillingAccount = the billable tenant; SubAccount = the line's tenant (for shared lines, the
  pool the cost came from). InvoiceId = the statement number, or DRAFT-<id> for drafts.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from django.conf import settings
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Drawing, Group, String
from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    CondPageBreak,
    Flowable,
    Frame,
    KeepTogether,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from chargeback import money
from chargeback.calendar import add_months, local_midnight
from chargeback.models import SharedCostRule, Statement, StatementLine
from chargeback.pricing import GENAI_PRICES_VERSION
from chargeback.selectors import statement_tenant_ids, usage_daily_cost, usage_totals
from tenants.models import Tenant
from tenants.selectors import tenant_descendant_ids

PAGE_SIZES = {"A4": A4, "LETTER": LETTER}
ROUNDING_NOTE = (
    "Rounding: each line is rounded to the cent (half-even, leftover cents to the largest "
    "remainders); the total is the sum of the rounded lines."
)
# English month names, independent of the process locale (strftime's %B is not).
MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


class StatementTotalMismatch(ValueError):
    """The statement's lines do not add up to its total: no document is produced from it."""


def statement_lines_checked(statement: Statement) -> list[StatementLine]:
    """The statement's lines in position order, after checking that their cents sum to the total."""
    lines = sorted(statement.lines.all(), key=lambda line: line.position)
    lines_total = sum(line.amount_cents for line in lines)
    if lines_total != statement.total_cents:
        raise StatementTotalMismatch(
            f"Statement {statement.pk}: lines add up to {money.cents_to_str(lines_total)}, "
            f"the total is {money.cents_to_str(statement.total_cents)}."
        )
    return lines


# --- shared formatting ---------------------------------------------------------------------------


def format_usd(cents: int) -> str:
    """Cents as a USD amount for people, with thousands separators: 123456 -> '1,234.56'."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{part:02d}"


def utc_iso(moment: datetime) -> str:
    """A moment as UTC ISO-8601 with a Z, to the second: '2026-03-01T05:00:00Z'."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def month_label(period_key: str) -> str:
    """'2026-03' -> 'March 2026'."""
    year, month = period_key.split("-")
    return f"{MONTH_NAMES[int(month) - 1]} {year}"


def invoice_id(statement: Statement) -> str:
    """The statement's number, or DRAFT-<id> for a draft, which has none yet."""
    return statement.number or f"DRAFT-{statement.pk}"


def _plain_decimal(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros: Decimal('2.500000000') -> '2.5'."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def _spreadsheet_safe(text: str) -> str:
    """Free text for a CSV cell that spreadsheets will not run as a formula (model names and
    descriptions can come from clients); amounts are never passed through this."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _issuer_name(statement: Statement) -> str:
    # A draft is not issued yet: it shows today's issuer, as it shows today's tenant details.
    if statement.status == Statement.Status.DRAFT or not statement.issuer_name:
        return settings.STATEMENT_ISSUER_NAME
    return statement.issuer_name


def _billed_party(statement: Statement) -> tuple[str, str]:
    """(name, billing e-mail): frozen on issued statements, the live tenant's on drafts."""
    if statement.status == Statement.Status.DRAFT or not statement.tenant_name:
        return statement.tenant.name, statement.tenant.billing_email
    return statement.tenant_name, statement.billing_email


def _month_range(statement: Statement, period_key: str) -> tuple[datetime, datetime]:
    """[start, end) of one of the statement tenant's months: the range its statement for that month
    used (the zone may have changed since), else that month in the statement's zone."""
    if period_key == statement.period_key:
        return statement.period_start, statement.period_end
    same_month = Statement.objects.filter(tenant_id=statement.tenant_id, period_key=period_key)
    stored = (
        same_month.exclude(status=Statement.Status.VOID).values_list("period_start", "period_end").first()
        or same_month.values_list("period_start", "period_end").first()
    )
    if stored:
        return stored
    first = date.fromisoformat(f"{period_key}-01")
    return (
        local_midnight(first, statement.time_zone),
        local_midnight(add_months(first, 1), statement.time_zone),
    )


# --- CSV of the lines ----------------------------------------------------------------------------

STATEMENT_CSV_COLUMNS = (
    "position",
    "kind",
    "description",
    "tenant",
    "provider",
    "model",
    "token_type",
    "quantity",
    "unit",
    "unit_price",
    "unit_scale",
    "amount_usd",
    "adjustment_period",
)


def statement_csv(statement: Statement) -> str:
    """The statement's lines as CSV (RFC 4180, CRLF), one row per line in position order, then one
    final row with kind "total" and the statement total in amount_usd (the sum of the lines).

    unit_price is USD per unit_scale units (e.g. per 1,000,000 tokens); amount_usd is the line's
    rounded amount ("12.34"), so the lines add up to the total row exactly.
    """
    lines = statement_lines_checked(statement)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(STATEMENT_CSV_COLUMNS)
    for line in lines:
        writer.writerow(
            [
                line.position,
                line.kind,
                _spreadsheet_safe(line.description),
                _spreadsheet_safe(line.tenant_slug),
                _spreadsheet_safe(line.provider),
                _spreadsheet_safe(line.model),
                line.token_type,
                line.quantity if line.unit else "",
                line.unit,
                line.unit_price,
                line.unit_scale if line.unit_price else "",
                money.cents_to_str(line.amount_cents),
                line.adjustment_period_key,
            ]
        )
    total_row = dict.fromkeys(STATEMENT_CSV_COLUMNS, "")
    total_row.update(kind="total", description="Total", amount_usd=money.cents_to_str(statement.total_cents))
    writer.writerow(total_row.values())
    return buffer.getvalue()


# --- FOCUS 1.2 -----------------------------------------------------------------------------------

# The FOCUS 1.2 columns that are mandatory in every dataset.
FOCUS_MANDATORY_COLUMNS = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
)
# Mandatory columns, the conditional and recommended ones chargeback can fill, then custom ones.
# Columns for features chargeback has no notion of (regions, commitment discounts, capacity
# reservations, a pricing currency apart from the billing one) are left out, as FOCUS allows.
FOCUS_COLUMNS = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingAccountType",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceId",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "SubAccountType",
    "Tags",
    "x_LineKind",
    "x_Model",
    "x_StatementStatus",
    "x_TokenType",
)
_FOCUS_NUMERIC_COLUMNS = frozenset(
    {
        "BilledCost",
        "ConsumedQuantity",
        "ContractedCost",
        "ContractedUnitPrice",
        "EffectiveCost",
        "ListCost",
        "ListUnitPrice",
        "PricingQuantity",
    }
)


def _focus_unit(unit: str) -> str:
    """Our line unit ("tokens") as a FOCUS unit ("Tokens")."""
    return unit[:1].upper() + unit[1:]


def _tenant_details(slugs: set[str], known: dict[str, tuple[str, str]]) -> None:
    """Fill `known` with slug -> (name, kind label) for the slugs it lacks, in one query."""
    missing = slugs - known.keys() - {""}
    for slug, name, kind in Tenant.objects.filter(slug__in=missing).values_list("slug", "name", "kind"):
        known[slug] = (name, Tenant.Kind(kind).label)


def focus_rows(statements: Iterable[Statement]) -> Iterator[dict[str, str]]:
    """FOCUS 1.2 rows (dicts keyed by FOCUS_COLUMNS, all values strings), one per statement line.

    See the module docstring for how each line kind maps to FOCUS columns.
    """
    tenants: dict[str, tuple[str, str]] = {}
    for statement in statements:
        lines = statement_lines_checked(statement)
        account_name, _ = _billed_party(statement)
        issuer = _issuer_name(statement)
        billing_start, billing_end = utc_iso(statement.period_start), utc_iso(statement.period_end)
        _tenant_details({statement.tenant.slug} | {line.tenant_slug for line in lines}, tenants)
        adjusted_ranges: dict[str, tuple[str, str]] = {}
        for line in lines:
            amount = money.cents_to_str(line.amount_cents)
            is_adjustment = line.kind == StatementLine.Kind.ADJUSTMENT
            if is_adjustment and line.adjustment_period_key:
                if line.adjustment_period_key not in adjusted_ranges:
                    start, end = _month_range(statement, line.adjustment_period_key)
                    adjusted_ranges[line.adjustment_period_key] = (utc_iso(start), utc_iso(end))
                charge_start, charge_end = adjusted_ranges[line.adjustment_period_key]
            else:
                charge_start, charge_end = billing_start, billing_end
            sub_account = line.tenant_slug or statement.tenant.slug
            sub_account_name, sub_account_type = tenants.get(sub_account, (sub_account, ""))
            provider = line.provider or issuer
            sku = f"{line.provider}/{line.model}" if line.provider and line.model else ""
            meter = line.token_type or (line.unit if line.unit and sku else "")
            row = dict.fromkeys(FOCUS_COLUMNS, "")
            row.update(
                BilledCost=amount,
                BillingAccountId=statement.tenant.slug,
                BillingAccountName=account_name,
                BillingAccountType=tenants[statement.tenant.slug][1],
                BillingCurrency=statement.currency,
                BillingPeriodStart=billing_start,
                BillingPeriodEnd=billing_end,
                ChargeCategory="Adjustment" if is_adjustment else "Usage",
                ChargeClass="Correction" if is_adjustment else "",
                ChargeDescription=line.description,
                ChargeFrequency="Usage-Based",
                ChargePeriodStart=charge_start,
                ChargePeriodEnd=charge_end,
                ContractedCost=amount,
                EffectiveCost=amount,
                InvoiceId=invoice_id(statement),
                InvoiceIssuerName=issuer,
                ListCost="0.00" if line.kind == StatementLine.Kind.MARKUP else amount,
                ProviderName=provider,
                PublisherName=provider,
                ServiceCategory="AI and Machine Learning",
                ServiceSubcategory="Generative AI",
                ServiceName=f"{line.provider} {line.model}" if sku else "LLM usage",
                SkuId=sku,
                SkuMeter=meter,
                SkuPriceId=f"{sku}/{meter}" if sku and meter else "",
                ResourceId=sku,
                ResourceName=line.model if sku else "",
                ResourceType="Model" if sku else "",
                SubAccountId=sub_account,
                SubAccountName=sub_account_name,
                SubAccountType=sub_account_type,
                Tags=json.dumps(
                    {
                        "chargeback/line-kind": line.kind,
                        "chargeback/tenant": sub_account,
                        **(
                            {"chargeback/adjusted-period": line.adjustment_period_key}
                            if is_adjustment
                            else {}
                        ),
                    },
                    sort_keys=True,
                    separators=(",", ":"),
                ),
                x_LineKind=line.kind,
                x_Model=line.model,
                x_StatementStatus=statement.status,
                x_TokenType=line.token_type,
            )
            if not is_adjustment:
                row["PricingCategory"] = "Standard"
                if line.unit:
                    unit = _focus_unit(line.unit)
                    row["ConsumedQuantity"] = str(line.quantity)
                    row["ConsumedUnit"] = unit
                    scale = line.unit_scale if line.unit_price else 1
                    row["PricingQuantity"] = _plain_decimal(Decimal(line.quantity) / Decimal(scale))
                    row["PricingUnit"] = f"{scale} {unit}" if scale != 1 else unit
                    if line.unit_price:
                        price = _plain_decimal(Decimal(line.unit_price))
                        row["ListUnitPrice"] = row["ContractedUnitPrice"] = price
                else:
                    row["PricingQuantity"], row["PricingUnit"] = "1", "Charges"
            yield row


def focus_csv(statements: Iterable[Statement]) -> Iterator[str]:
    """A FOCUS 1.2 CSV, streamed: the header line, then one line per statement line (CRLF)."""

    class _Echo:
        def write(self, text: str) -> str:
            return text

    writer = csv.DictWriter(_Echo(), fieldnames=FOCUS_COLUMNS, lineterminator="\r\n")
    yield writer.writeheader()
    for row in focus_rows(statements):
        yield writer.writerow(
            {
                name: value if name in _FOCUS_NUMERIC_COLUMNS else _spreadsheet_safe(value)
                for name, value in row.items()
            }
        )


# --- PDF -----------------------------------------------------------------------------------------

_INK = colors.HexColor("#1F2328")
_MUTED = colors.HexColor("#5A6270")
_RULE = colors.HexColor("#C9CED6")
_HEADER_FILL = colors.HexColor("#E9EDF2")
_STRIPE_FILL = colors.HexColor("#F6F8FA")
_BOX_FILL = colors.HexColor("#F3F6F9")
_BAR_FILL = colors.HexColor("#5B84B1")
_WATERMARK = {
    Statement.Status.DRAFT: ("DRAFT", colors.HexColor("#8A94A3")),
    Statement.Status.VOID: ("VOID", colors.HexColor("#C0392B")),
}


def _styles() -> dict[str, ParagraphStyle]:
    body = ParagraphStyle("body", fontName="Helvetica", fontSize=9.5, leading=12.5, textColor=_INK)
    return {
        "body": body,
        "note": ParagraphStyle("note", parent=body, spaceAfter=3),
        "small": ParagraphStyle("small", parent=body, fontSize=8, leading=10, textColor=_MUTED),
        "cell": ParagraphStyle("cell", parent=body, fontSize=8.5, leading=10.5),
        "cell_right": ParagraphStyle(
            "cell_right", parent=body, fontSize=8.5, leading=10.5, alignment=TA_RIGHT
        ),
        "cell_heading": ParagraphStyle(
            "cell_heading", parent=body, fontName="Helvetica-Bold", fontSize=8.5, leading=10.5
        ),
        "cell_heading_right": ParagraphStyle(
            "cell_heading_right",
            parent=body,
            fontName="Helvetica-Bold",
            fontSize=8.5,
            leading=10.5,
            alignment=TA_RIGHT,
        ),
        "label": ParagraphStyle("label", parent=body, fontSize=8, leading=10, textColor=_MUTED),
        "title": ParagraphStyle("title", parent=body, fontName="Helvetica-Bold", fontSize=17, leading=21),
        "title_right": ParagraphStyle(
            "title_right", parent=body, fontName="Helvetica-Bold", fontSize=13, leading=21, alignment=TA_RIGHT
        ),
        "heading": ParagraphStyle(
            "heading",
            parent=body,
            fontName="Helvetica-Bold",
            fontSize=11,
            leading=14,
            spaceBefore=12,
            spaceAfter=5,
        ),
        "amount": ParagraphStyle("amount", parent=body, fontName="Helvetica-Bold", fontSize=15, leading=19),
        "figure": ParagraphStyle("figure", parent=body, fontSize=11, leading=15),
    }


class _NumberedCanvas(Canvas):
    """Holds every page back until the page count is known, to print "Page X of Y" on each."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._page_states: list[dict] = []

    def showPage(self):
        self._page_states.append(dict(self.__dict__))
        self._startPage()

    def save(self):
        page_count = len(self._page_states)
        for state in self._page_states:
            self.__dict__.update(state)
            width, _ = self._pagesize
            self.setFont("Helvetica", 8)
            self.setFillColor(_MUTED)
            self.drawRightString(width - 18 * mm, 10 * mm, f"Page {self._pageNumber} of {page_count}")
            super().showPage()
        super().save()


def _data_table(
    rows: list[list], widths: list[float], *, numeric_from: int, total_row: bool = False
) -> Table:
    """A table with a header row repeated on every page, light stripes and right-aligned figures."""
    table = Table(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
    last = len(rows) - 1
    commands = [
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8.5),
        ("FONT", (0, 1), (-1, -1), "Helvetica", 8.5),
        ("TEXTCOLOR", (0, 0), (-1, -1), _INK),
        ("BACKGROUND", (0, 0), (-1, 0), _HEADER_FILL),
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, _RULE),
        ("LINEBELOW", (0, 1), (-1, -1), 0.3, _RULE),
        ("ALIGN", (numeric_from, 0), (-1, -1), "RIGHT"),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 3),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
        ("LEFTPADDING", (0, 0), (-1, -1), 4),
        ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]
    if last > 1:
        commands.append(
            ("ROWBACKGROUNDS", (0, 1), (-1, last - 1 if total_row else last), [None, _STRIPE_FILL])
        )
    if total_row:
        commands += [
            ("FONT", (0, last), (-1, last), "Helvetica-Bold", 9),
            ("LINEABOVE", (0, last), (-1, last), 1, _INK),
            ("LINEBELOW", (0, last), (-1, last), 0, colors.white),
        ]
    table.setStyle(TableStyle(commands))
    return table


def _header_flowables(statement: Statement, styles, width: float) -> list[Flowable]:
    if statement.status == Statement.Status.DRAFT:
        identifier = "DRAFT"
        status = (
            f"Draft, not a final statement: amounts may change until it is finalized. "
            f"Generated {statement.generated_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC."
        )
    elif statement.status == Statement.Status.VOID:
        identifier = f"VOID {statement.number or ''}".strip()
        voided = f" on {statement.voided_at.astimezone(UTC):%Y-%m-%d}" if statement.voided_at else ""
        reason = f": {statement.void_reason}" if statement.void_reason else ""
        status = f"This statement was voided{voided}{reason}. It is not payable."
    else:
        identifier = f"No. {statement.number}"
        finalized = statement.finalized_at or statement.generated_at
        status = f"Finalized {finalized.astimezone(UTC):%Y-%m-%d %H:%M} UTC."
    if statement.replaces_id:
        replaced = Statement.objects.filter(pk=statement.replaces_id).values_list("number", flat=True).first()
        status += f" Replaces statement {replaced or statement.replaces_id}."

    title = Table(
        [
            [
                Paragraph("Chargeback statement", styles["title"]),
                Paragraph(escape(identifier), styles["title_right"]),
            ]
        ],
        colWidths=[width * 0.6, width * 0.4],
        hAlign="LEFT",
    )
    title.setStyle(TableStyle([("LEFTPADDING", (0, 0), (-1, -1), 0), ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))

    name, email = _billed_party(statement)
    zone = statement.time_zone
    billed_to = f"<b>{escape(name)}</b><br/>{escape(statement.tenant.slug)}"
    if email:
        billed_to += f"<br/>{escape(email)}"
    period = (
        f"<b>{month_label(statement.period_key)}</b> ({escape(zone)})<br/>"
        f"{utc_iso(statement.period_start)} to<br/>{utc_iso(statement.period_end)}, end exclusive"
    )
    parties = Table(
        [
            [
                Paragraph("Issued by", styles["label"]),
                Paragraph("Billed to", styles["label"]),
                Paragraph("Period", styles["label"]),
            ],
            [
                Paragraph(f"<b>{escape(_issuer_name(statement))}</b>", styles["body"]),
                Paragraph(billed_to, styles["body"]),
                Paragraph(period, styles["body"]),
            ],
        ],
        colWidths=[width * 0.28, width * 0.34, width * 0.38],
        hAlign="LEFT",
    )
    parties.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 0), (-1, -1), 1),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
            ]
        )
    )
    return [
        title,
        Paragraph(escape(status), styles["small"]),
        Spacer(1, 4 * mm),
        parties,
        Spacer(1, 5 * mm),
    ]


def _change_labels(total: int, previous: int | None) -> tuple[str, str]:
    """(absolute change, percent change) from the previous month's total; n/a without one."""
    if previous is None:
        return "n/a", "n/a"
    difference = total - previous
    absolute = ("+" if difference > 0 else "") + format_usd(difference)
    if previous == 0:
        return absolute, "n/a"
    percent = (Decimal(difference) * 100 / abs(Decimal(previous))).quantize(Decimal("0.1"), ROUND_HALF_EVEN)
    return absolute, f"{'+' if percent > 0 else ''}{percent}%"


def _summary_box(statement: Statement, styles, width: float) -> Table:
    previous_key = f"{add_months(date.fromisoformat(statement.period_key + '-01'), -1):%Y-%m}"
    previous = statement.previous_total_cents
    absolute, percent = _change_labels(statement.total_cents, previous)
    currency = escape(statement.currency)
    total_label = "Total" if statement.status == Statement.Status.VOID else "Total due"
    cells = [
        [
            Paragraph(f"{total_label} ({currency})", styles["label"]),
            Paragraph(f"Previous month, {month_label(previous_key)} ({currency})", styles["label"]),
            Paragraph("Change from previous month", styles["label"]),
        ],
        [
            Paragraph(format_usd(statement.total_cents), styles["amount"]),
            Paragraph("n/a" if previous is None else format_usd(previous), styles["figure"]),
            Paragraph(f"{absolute} ({percent})" if previous is not None else "n/a", styles["figure"]),
        ],
    ]
    box = Table(cells, colWidths=[width * 0.3, width * 0.38, width * 0.32], hAlign="LEFT")
    box.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), _BOX_FILL),
                ("BOX", (0, 0), (-1, -1), 0.8, _RULE),
                ("VALIGN", (0, 0), (-1, -1), "BOTTOM"),
                ("LEFTPADDING", (0, 0), (-1, -1), 8),
                ("TOPPADDING", (0, 0), (0, 0), 7),
                ("TOPPADDING", (1, 0), (-1, 0), 7),
                ("BOTTOMPADDING", (0, 1), (-1, 1), 8),
            ]
        )
    )
    return box


def _unit_price_label(line: StatementLine) -> str:
    if not line.unit_price:
        return ""
    price = Decimal(line.unit_price).normalize()
    if price.as_tuple().exponent > -2:
        price = price.quantize(Decimal("0.01"))
    scale = {1: "", 1_000: "1K ", 1_000_000: "1M "}.get(line.unit_scale, f"{line.unit_scale:,} ")
    return f"{price:f} / {scale}{line.unit}" if scale else f"{price:f} each"


def _kind_label(line: StatementLine) -> str:
    if line.kind == StatementLine.Kind.MARKUP:
        return "Discount" if line.amount_cents < 0 else "Markup"
    if line.kind == StatementLine.Kind.ADJUSTMENT:
        adjusted = month_label(line.adjustment_period_key) if line.adjustment_period_key else "earlier month"
        return f"Adjustment for {adjusted}"
    return {
        StatementLine.Kind.USAGE: "Usage",
        StatementLine.Kind.PRICE_DIFFERENCE: "Price difference",
        StatementLine.Kind.SHARED: "Shared cost",
    }.get(line.kind, line.kind)


def _lines_table(statement: Statement, lines: list[StatementLine], styles, width: float) -> Table:
    cell, right = styles["cell"], styles["cell_right"]
    rows: list[list] = [["#", "Type", "Description", "Quantity", "Unit price (USD)", "Amount (USD)"]]
    for line in lines:
        description = escape(line.description)
        if line.tenant_slug and line.tenant_slug != statement.tenant.slug:
            description += f' <font color="#5A6270">({escape(line.tenant_slug)})</font>'
        rows.append(
            [
                str(line.position),
                Paragraph(escape(_kind_label(line)), cell),
                Paragraph(description, cell),
                Paragraph(f"{line.quantity:,} {escape(line.unit)}" if line.unit else "", right),
                Paragraph(escape(_unit_price_label(line)), right),
                format_usd(line.amount_cents),
            ]
        )
    rows.append(["", "", "Total", "", "", format_usd(statement.total_cents)])
    fractions = (0.045, 0.135, 0.37, 0.16, 0.16, 0.13)
    return _data_table(rows, [width * fraction for fraction in fractions], numeric_from=3, total_row=True)


def _statement_usage_tenant_ids(statement: Statement) -> list[int]:
    """The tenants whose own usage the statement bills: its subtree less billable subtrees and
    shared-cost pools (those reach it as shared-cost lines), as statement generation counts them."""
    pools = list(SharedCostRule.objects.values_list("pool_id", flat=True))
    excluded = set(tenant_descendant_ids(*pools)) if pools else set()
    return sorted(set(statement_tenant_ids(statement.tenant_id)) - excluded)


def _usage_breakdown(statement: Statement, tenant_ids: list[int], styles, width: float) -> list[Flowable]:
    totals = usage_totals(
        tenant_ids=tenant_ids,
        start=statement.period_start,
        end=statement.period_end,
        group_by=("tenant_id", "feature", "model"),
    )
    if not totals:
        return [Paragraph("No usage was recorded in this period.", styles["body"])]
    names = {
        tenant_id: (slug, name)
        for tenant_id, slug, name in Tenant.objects.filter(id__in={key[0] for key in totals}).values_list(
            "id", "slug", "name"
        )
    }
    cell, right = styles["cell"], styles["cell_right"]
    heading, heading_right = styles["cell_heading"], styles["cell_heading_right"]
    rows: list[list] = [
        [
            Paragraph("Team / customer", heading),
            Paragraph("Feature", heading),
            Paragraph("Model", heading),
            *(
                Paragraph(title, heading_right)
                for title in (
                    "Input<br/>tokens",
                    "of which<br/>cached",
                    "Output<br/>tokens",
                    "Requests",
                    "Amount<br/>(USD)",
                )
            ),
        ]
    ]
    sums = dict.fromkeys(("input", "cached", "output", "requests", "cents", "unpriced"), 0)
    ordered = sorted(
        totals.items(),
        key=lambda item: (names[item[0][0]][0], -item[1]["cost_nanos"], item[0][1], item[0][2]),
    )
    for (tenant_id, feature, model), values in ordered:
        slug, name = names[tenant_id]
        input_tokens = (
            values["uncached_input_tokens"] + values["cached_input_tokens"] + values["cache_write_tokens"]
        )
        cents = money.round_to_cents(values["cost_nanos"])
        sums["input"] += input_tokens
        sums["cached"] += values["cached_input_tokens"]
        sums["output"] += values["output_tokens"]
        sums["requests"] += values["requests"]
        sums["cents"] += cents
        sums["unpriced"] += values["unpriced_requests"]
        rows.append(
            [
                Paragraph(f'{escape(name)}<br/><font size="7" color="#5A6270">{escape(slug)}</font>', cell),
                Paragraph(escape(feature) if feature else '<font color="#5A6270">(untagged)</font>', cell),
                Paragraph(escape(model), cell),
                f"{input_tokens:,}",
                f"{values['cached_input_tokens']:,}",
                f"{values['output_tokens']:,}",
                f"{values['requests']:,}",
                Paragraph(format_usd(cents), right),
            ]
        )
    rows.append(
        [
            "All usage",
            "",
            "",
            f"{sums['input']:,}",
            f"{sums['cached']:,}",
            f"{sums['output']:,}",
            f"{sums['requests']:,}",
            format_usd(sums["cents"]),
        ]
    )
    fractions = (0.20, 0.11, 0.17, 0.12, 0.10, 0.11, 0.10, 0.09)
    flowables: list[Flowable] = [
        _data_table(rows, [width * fraction for fraction in fractions], numeric_from=3, total_row=True),
        Spacer(1, 2 * mm),
        Paragraph(
            "Charged cost of each team's or customer's own usage, markup or discount included, rounded per "
            "row; shared-cost and adjustment lines above are not part of it, so its sum can differ from "
            "the statement total.",
            styles["small"],
        ),
    ]
    if sums["unpriced"]:
        flowables.append(
            Paragraph(
                f"{sums['unpriced']:,} requests had no known price and no reported cost; they are counted "
                "above but cost nothing on this statement.",
                styles["small"],
            )
        )
    return flowables


def _daily_chart(statement: Statement, tenant_ids: list[int], width: float) -> Drawing:
    zone = ZoneInfo(statement.time_zone)
    first_day = statement.period_start.astimezone(zone).date()
    last_day = (statement.period_end.astimezone(zone)).date()
    spent = dict(
        usage_daily_cost(
            tenant_ids=tenant_ids,
            start=statement.period_start,
            end=statement.period_end,
            time_zone=statement.time_zone,
        )
    )
    days = [date.fromordinal(ordinal) for ordinal in range(first_day.toordinal(), last_day.toordinal())]
    # Floats only place the bars; every amount printed as text comes from the integer cents.
    values = [spent.get(day, 0) / money.NANOS_PER_USD for day in days]
    height = 62 * mm
    drawing = Drawing(width, height)
    chart = VerticalBarChart()
    chart.x, chart.y = 52, 34
    chart.width, chart.height = width - 62, height - 62
    chart.data = [values or [0]]
    chart.categoryAxis.categoryNames = [str(day.day) for day in days] or [""]
    chart.categoryAxis.labels.fontName = "Helvetica"
    chart.categoryAxis.labels.fontSize = 7
    chart.categoryAxis.labels.dy = -2
    chart.categoryAxis.strokeColor = _MUTED
    chart.valueAxis.valueMin = 0
    chart.valueAxis.valueMax = max([*values, 0]) * 1.1 or 1
    chart.valueAxis.labels.fontName = "Helvetica"
    chart.valueAxis.labels.fontSize = 7
    chart.valueAxis.labelTextFormat = lambda value: f"{value:,.2f}"
    chart.valueAxis.strokeColor = _MUTED
    chart.valueAxis.gridStrokeColor = _RULE
    chart.valueAxis.gridStrokeWidth = 0.3
    chart.valueAxis.visibleGrid = True
    chart.bars[0].fillColor = _BAR_FILL
    chart.bars[0].strokeColor = None
    chart.barSpacing = 1
    chart.groupSpacing = 2
    drawing.add(chart)
    drawing.add(
        String(
            width / 2,
            height - 12,
            f"Daily spend, {month_label(statement.period_key)} (USD per day)",
            fontName="Helvetica-Bold",
            fontSize=9,
            fillColor=_INK,
            textAnchor="middle",
        )
    )
    drawing.add(
        String(
            52 + (width - 62) / 2,
            6,
            f"Day of month ({statement.time_zone})",
            fontName="Helvetica",
            fontSize=8,
            fillColor=_MUTED,
            textAnchor="middle",
        )
    )
    axis_label = Group(
        String(0, 0, "USD", fontName="Helvetica", fontSize=8, fillColor=_MUTED, textAnchor="middle")
    )
    axis_label.translate(9, 34 + (height - 62) / 2)
    axis_label.rotate(90)
    drawing.add(axis_label)
    return drawing


def _notes(statement: Statement, styles) -> list[Flowable]:
    notes = [note.strip() for note in statement.notes.splitlines() if note.strip()]
    # Notes written at generation name the genai-prices version the usage was priced with; only
    # statements without one get the running version, which is then the best available answer.
    if "genai-prices" not in statement.notes:
        notes.append(
            f"Prices: priced with {GENAI_PRICES_VERSION} and the price overrides in force on each call's date."
        )
    notes.append(ROUNDING_NOTE)
    notes.append(
        f"Times are UTC; the month is the calendar month of {statement.time_zone}. Amounts are in "
        f"{statement.currency}."
    )
    return [Paragraph(escape(note), styles["note"]) for note in notes]


def statement_pdf_render(statement: Statement, *, page_size: str = "A4") -> bytes:
    """The statement as a PDF (A4 or LETTER), the same bytes for the same statement and usage.

    Header (number, or DRAFT / VOID), issuer, billed tenant and period; a summary of the total
    against the previous month; the statement lines; a daily spend chart and the usage by team or
    customer, feature and model from the period's rollups; notes. Every page says "Page X of Y".
    """
    try:
        pagesize = PAGE_SIZES[page_size.upper()]
    except KeyError:
        raise ValueError(f"page_size must be one of {', '.join(PAGE_SIZES)}, not {page_size!r}") from None
    lines = statement_lines_checked(statement)
    styles = _styles()
    name, _ = _billed_party(statement)
    footer = f"Statement {invoice_id(statement)} · {name} · {month_label(statement.period_key)}"
    watermark = _WATERMARK.get(statement.status)

    def decorate_page(canvas: Canvas, document: BaseDocTemplate) -> None:
        canvas.saveState()
        width, _ = document.pagesize
        canvas.setStrokeColor(_RULE)
        canvas.setLineWidth(0.5)
        canvas.line(document.leftMargin, 14 * mm, width - document.rightMargin, 14 * mm)
        canvas.setFont("Helvetica", 8)
        canvas.setFillColor(_MUTED)
        canvas.drawString(document.leftMargin, 10 * mm, footer)
        canvas.restoreState()

    def watermark_page(canvas: Canvas, document: BaseDocTemplate) -> None:
        if not watermark:
            return
        # Over the content (table stripes would hide it underneath), translucent so text stays legible.
        text, color = watermark
        width, height = document.pagesize
        canvas.saveState()
        canvas.setFillColor(color)
        canvas.setFillAlpha(0.22)
        canvas.setFont("Helvetica-Bold", 110)
        canvas.translate(width / 2, height / 2)
        canvas.rotate(45)
        canvas.drawCentredString(0, -35, text)
        canvas.restoreState()

    buffer = io.BytesIO()
    document = BaseDocTemplate(
        buffer,
        pagesize=pagesize,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=20 * mm,
        title=f"Chargeback statement {invoice_id(statement)}",
        author=_issuer_name(statement),
        subject=f"{name}, {month_label(statement.period_key)}",
        creator="chargeback",
        invariant=1,  # fixed creation date and document id: same input, same bytes (and SHA-256)
    )
    frame = Frame(
        document.leftMargin, document.bottomMargin, document.width, document.height, id="body", showBoundary=0
    )
    document.addPageTemplates(
        [PageTemplate(id="statement", frames=[frame], onPage=decorate_page, onPageEnd=watermark_page)]
    )
    width = document.width
    usage_tenant_ids = _statement_usage_tenant_ids(statement)
    story: list[Flowable] = [
        *_header_flowables(statement, styles, width),
        _summary_box(statement, styles, width),
        Paragraph("Statement lines", styles["heading"]),
        _lines_table(statement, lines, styles, width),
        CondPageBreak(75 * mm),
        Paragraph("Daily spend", styles["heading"]),
        _daily_chart(statement, usage_tenant_ids, width),
        Paragraph("Usage by team or customer, feature and model", styles["heading"]),
        *_usage_breakdown(statement, usage_tenant_ids, styles, width),
        KeepTogether([Paragraph("Notes", styles["heading"]), *_notes(statement, styles)]),
    ]
    document.build(story, canvasmaker=_NumberedCanvas)
    return buffer.getvalue()
