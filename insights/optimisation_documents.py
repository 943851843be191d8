"""The savings report as documents: a CSV of the ranked opportunities and a PDF for the cost review."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from chargeback import money

CSV_COLUMNS = (
    "rank",
    "kind",
    "title",
    "feature",
    "model",
    "alternative",
    "period_savings_usd",
    "monthly_savings_usd",
    "evidence",
)
KIND_LABELS = {
    "exact_cache": "Exact-match cache",
    "prompt_caching": "Provider prompt caching",
    "model_substitution": "Cheaper model",
    "routing_rollout": "Routing policy roll-out",
}
NOTE = (
    "Figures are list cost (provider prices, negotiated overrides included, before markups). Monthly "
    "savings are the period's savings at the same rate over 30 days. Opportunities can concern the "
    "same calls (caching a prompt and moving it to a cheaper model), so they do not add up."
)


def savings_report_csv(report: dict[str, Any]) -> str:
    """One line per opportunity, in rank order; evidence as a JSON object."""
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for entry in report["opportunities"]:
        writer.writerow(
            [
                entry["rank"],
                entry["kind"],
                entry["title"],
                entry["feature"],
                entry["model"],
                entry["alternative"],
                money.nanos_to_str(entry["period_savings_nanos"]),
                money.nanos_to_str(entry["monthly_savings_nanos"]),
                json.dumps(entry["evidence"], sort_keys=True, default=str),
            ]
        )
    return output.getvalue()


def _usd(nanos: int) -> str:
    cents = money.round_to_cents(nanos)
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{part:02d}"


def _local(moment: datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def savings_report_pdf(report: dict[str, Any], *, title: str = "Savings opportunities") -> bytes:
    """The ranked opportunities as a PDF: scope, totals by kind, then one row per opportunity."""
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=landscape(A4),
        leftMargin=14 * mm,
        rightMargin=14 * mm,
        topMargin=14 * mm,
        bottomMargin=14 * mm,
        title=title,
        author="chargeback",
    )
    heading = ParagraphStyle("heading", fontName="Helvetica-Bold", fontSize=16, leading=20, spaceAfter=6)
    body = ParagraphStyle("body", fontName="Helvetica", fontSize=9, leading=12)
    small = ParagraphStyle("small", parent=body, fontSize=8, leading=10, textColor=colors.HexColor("#5b6475"))
    number = ParagraphStyle("number", parent=body, alignment=TA_RIGHT)
    scope = report["scope"]
    zone = scope["time_zone"]
    feature = "" if scope["feature"] is None else f", feature {scope['feature'] or '(untagged)'}"
    period = (
        f"{_local(scope['start'], zone)} to {_local(scope['end'], zone)} ({zone}){feature}; "
        f"{scope['observed_days']:g} days observed."
    )
    story: list = [Paragraph(escape(title), heading), Paragraph(escape(period), body), Spacer(1, 4 * mm)]
    totals = report["monthly_savings_nanos_by_kind"]
    if totals:
        rows = [["Kind", "Monthly savings"]] + [
            [KIND_LABELS.get(kind, kind), Paragraph(_usd(nanos), number)] for kind, nanos in totals.items()
        ]
        table = Table(rows, colWidths=[80 * mm, 40 * mm], hAlign="LEFT")
        table.setStyle(_table_style())
        story += [table, Spacer(1, 5 * mm)]
    rows = [["#", "Opportunity", "Kind", "Period savings", "Monthly savings"]]
    for entry in report["opportunities"]:
        rows.append(
            [
                str(entry["rank"]),
                Paragraph(escape(entry["title"]), body),
                Paragraph(escape(KIND_LABELS.get(entry["kind"], entry["kind"])), body),
                Paragraph(_usd(entry["period_savings_nanos"]), number),
                Paragraph(_usd(entry["monthly_savings_nanos"]), number),
            ]
        )
    if len(rows) == 1:
        story.append(Paragraph("No opportunities found in this period.", body))
    else:
        table = Table(rows, colWidths=[10 * mm, 140 * mm, 45 * mm, 32 * mm, 32 * mm], repeatRows=1)
        table.setStyle(_table_style())
        story.append(table)
    story += [Spacer(1, 5 * mm), Paragraph(escape(NOTE), small)]
    document.build(story)
    return buffer.getvalue()


def _table_style() -> TableStyle:
    return TableStyle(
        [
            ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 9),
            ("FONT", (0, 1), (-1, -1), "Helvetica", 9),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef1f5")),
            ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#d9dde5")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
    )
