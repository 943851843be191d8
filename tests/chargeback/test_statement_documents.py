import csv
import inspect
import io
import re
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pypdf import PdfReader

from chargeback.services import statement_generate, usage_records_ingest
from chargeback.statement_documents import (
    FOCUS_COLUMNS,
    FOCUS_MANDATORY_COLUMNS,
    STATEMENT_CSV_COLUMNS,
    StatementTotalMismatch,
    focus_csv,
    focus_rows,
    statement_csv,
    statement_pdf_render,
)
from tests.chargeback.helpers import usage_record
from tests.factories import StatementFactory, StatementLineFactory, TenantFactory

pytestmark = pytest.mark.django_db

MARCH_START = datetime(2026, 3, 1, 5, tzinfo=UTC)  # midnight in New York (EST)
MARCH_END = datetime(2026, 4, 1, 4, tzinfo=UTC)  # midnight in New York (EDT)

# One line of every kind; the cents add up to 81.74.
LINES = [
    dict(kind="usage", description="openai gpt-4o input tokens", tenant_slug="acme", provider="openai",
         model="gpt-4o", token_type="uncached_input", quantity=12_345_678, unit="tokens",
         unit_price="2.500000000", unit_scale=10**6, amount_cents=3086),
    dict(kind="usage", description="openai gpt-4o output tokens", tenant_slug="acme-search", provider="openai",
         model="gpt-4o", token_type="output", quantity=2_345_678, unit="tokens", unit_price="10.000000000",
         unit_scale=10**6, amount_cents=2346),
    dict(kind="usage", description="openai acme-finetune-v2: 57 requests", tenant_slug="acme", provider="openai",
         model="acme-finetune-v2", token_type="", quantity=57, unit="requests", unit_price="", unit_scale=1,
         amount_cents=283),
    dict(kind="markup", description="Markup (10.0000%)", tenant_slug="", provider="", model="", token_type="",
         quantity=0, unit="", unit_price="", amount_cents=573),
    dict(kind="shared", description="Shared cost: Platform evals (platform-pool, proportional to usage)",
         tenant_slug="platform-pool", provider="", model="", token_type="", quantity=0, unit="", unit_price="",
         amount_cents=1999),
    dict(kind="adjustment", description="Usage reported late for 2026-02 (statement CB-2026-000017)",
         tenant_slug="", provider="", model="", token_type="", quantity=0, unit="", unit_price="",
         adjustment_period_key="2026-02", amount_cents=-113),
]  # fmt: skip
LINES_TOTAL_CENTS = 8174


@pytest.fixture
def acme():
    return TenantFactory(
        slug="acme",
        name="Acme Research",
        kind="customer",
        time_zone="America/New_York",
        is_billable=True,
        billing_email="finance@acme.example",
    )


def statement_with_lines(tenant, lines=LINES, **fields):
    fields = {
        "period_start": MARCH_START,
        "period_end": MARCH_END,
        "time_zone": tenant.time_zone,
        "tenant_name": tenant.name,
        "billing_email": tenant.billing_email,
        **fields,
    }
    # Lines go onto a draft, which is then issued in one save, as finalization does: PostgreSQL's
    # trigger refuses any change to a finalized statement or its lines.
    issued = {name: fields.pop(name) for name in ("status", "number", "finalized_at") if name in fields}
    statement = StatementFactory(tenant=tenant, **fields)
    for position, line in enumerate(lines, start=1):
        StatementLineFactory(
            statement=statement, position=position, amount_nanos=line["amount_cents"] * 10**7, **line
        )
    statement.total_cents = sum(line["amount_cents"] for line in lines)
    for name, value in issued.items():
        setattr(statement, name, value)
    statement.save()
    return statement


def finalized(tenant, **fields):
    return statement_with_lines(
        tenant,
        status="finalized",
        number="CB-2026-000042",
        finalized_at=datetime(2026, 4, 3, 6, tzinfo=UTC),
        **fields,
    )


def pages_text(pdf: bytes) -> list[str]:
    """Each page's text as a real PDF reader extracts it, whitespace (line wraps) collapsed."""
    return [" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(pdf)).pages]


def pdf_text(pdf: bytes) -> str:
    return " ".join(pages_text(pdf))


# --- PDF -----------------------------------------------------------------------------------------


def test_pdf_shows_number_parties_period_total_and_page_numbers(acme):
    statement = finalized(acme, previous_total_cents=6000, issuer_name="Platform FinOps")
    text = pdf_text(statement_pdf_render(statement))

    assert statement.total_cents == LINES_TOTAL_CENTS
    for expected in (
        "CB-2026-000042",
        "Platform FinOps",
        "Acme Research",
        "finance@acme.example",
        "March 2026",
        "America/New_York",
        "2026-03-01T05:00:00Z",
        "2026-04-01T04:00:00Z",
        "81.74",  # the total
        "60.00",  # previous month
        "+21.74 (+36.2%)",
        "Adjustment for February 2026",
        "Shared cost",
        "Markup",
        "2.50 / 1M tokens",
        "12,345,678 tokens",
        "Daily spend, March 2026 (USD per day)",
        "each line is rounded to the cent",
        "Page 1 of",
    ):
        assert expected in text, expected
    assert "DRAFT" not in text


def test_pdf_change_is_n_a_without_a_previous_month(acme):
    text = pdf_text(statement_pdf_render(finalized(acme, previous_total_cents=None)))
    assert "Previous month, February 2026 (USD)" in text
    assert "81.74 n/a n/a" in text  # total, previous month, change
    assert "%" not in text.split("Statement lines")[0]


def test_a_draft_says_draft_and_shows_the_live_tenant(acme):
    statement = statement_with_lines(acme, tenant_name="Old Name Inc")
    text = pdf_text(statement_pdf_render(statement))
    assert "DRAFT" in text
    assert "Acme Research" in text and "Old Name Inc" not in text
    assert f"DRAFT-{statement.pk}" in text


def test_an_issued_statement_keeps_its_frozen_tenant_name(acme):
    statement = finalized(acme)
    acme.name = "Renamed Later"
    acme.save()
    statement.refresh_from_db()
    text = pdf_text(statement_pdf_render(statement))
    assert "Acme Research" in text and "Renamed Later" not in text


def test_a_void_statement_says_void(acme):
    statement = finalized(acme)
    statement.status, statement.void_reason = "void", "Wrong markup"
    statement.voided_at = datetime(2026, 4, 5, tzinfo=UTC)
    text = pdf_text(statement_pdf_render(statement))
    assert "VOID CB-2026-000042" in text
    assert "Wrong markup" in text


@pytest.mark.parametrize(("page_size", "width", "height"), [("A4", 595.28, 841.89), ("LETTER", 612, 792)])
def test_pdf_page_sizes(acme, page_size, width, height):
    reader = PdfReader(io.BytesIO(statement_pdf_render(finalized(acme), page_size=page_size)))
    for page in reader.pages:
        assert float(page.mediabox.width) == pytest.approx(width, abs=0.01)
        assert float(page.mediabox.height) == pytest.approx(height, abs=0.01)


def test_an_unknown_page_size_is_refused(acme):
    with pytest.raises(ValueError, match="page_size"):
        statement_pdf_render(finalized(acme), page_size="A3")


def test_a_long_statement_numbers_every_page_and_repeats_the_table_header(acme):
    lines = [
        dict(kind="usage", description=f"openai model-{index:03d} output tokens", tenant_slug="acme",
             provider="openai", model=f"model-{index:03d}", token_type="output", quantity=1000 * index,
             unit="tokens", unit_price="0.600000000", unit_scale=10**6, amount_cents=index)
        for index in range(150)
    ]  # fmt: skip
    statement = statement_with_lines(acme, lines=lines)
    pages = pages_text(statement_pdf_render(statement))

    assert len(pages) >= 3
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in text
        if "model-" in text:
            assert "Unit price (USD)" in text, f"no table header on page {number}"
    text = " ".join(pages)
    assert all(f"model-{index:03d}" in text for index in range(150))
    assert "111.75" in text  # 0 + 1 + ... + 149 cents


def test_pdf_is_deterministic(acme):
    statement = finalized(acme)
    assert statement_pdf_render(statement) == statement_pdf_render(statement)


def test_documents_refuse_lines_that_do_not_add_up(acme):
    statement = finalized(acme)
    statement.total_cents += 1
    for render in (statement_pdf_render, statement_csv, lambda statement: list(focus_rows([statement]))):
        with pytest.raises(StatementTotalMismatch):
            render(statement)


def test_pdf_breakdown_counts_the_usage_of_the_local_month(acme):
    TenantFactory(slug="acme-search", name="Search team", parent=acme, time_zone="America/New_York")
    records = [
        # 22:00 on 28 February in New York: the month before.
        usage_record("feb", timestamp="2026-03-01T03:00:00Z", cost_usd="100", tenant="acme-search"),
        usage_record("m1", timestamp="2026-03-05T15:00:00Z", cost_usd="12.34", tenant="acme-search"),
        usage_record("m2", timestamp="2026-03-06T15:30:00Z", cost_usd="0.66", tenant="acme-search"),
        # 23:00 on 31 March in New York: still March.
        usage_record("m3", timestamp="2026-04-01T03:00:00Z", cost_usd="1", tenant="acme-search"),
    ]
    records = [{**record, "model": "acme-finetune-v2"} for record in records]
    assert usage_records_ingest(items=records, scope_tenant_ids=None).accepted == 4
    statement = statement_with_lines(acme)
    text = pdf_text(statement_pdf_render(statement))

    assert "Search team" in text and "acme-finetune-v2" in text
    assert re.search(r"All usage [\d,]+ [\d,]+ [\d,]+ 3 14\.00", text), text
    assert "100.00" not in text


def test_pdf_of_a_generated_statement_shows_its_total(acme):
    records = [
        usage_record(f"r{index}", timestamp=f"2026-03-{day:02d}T15:00:00Z", tenant="acme")
        for index, day in enumerate((2, 2, 9, 17, 30))
    ]
    usage_records_ingest(items=records, scope_tenant_ids=None)
    statement = statement_generate(tenant=acme, period_key="2026-03")
    assert statement.lines.exists()
    text = pdf_text(statement_pdf_render(statement))
    cents = statement.total_cents
    assert f"{cents // 100:,}.{cents % 100:02d}" in text
    assert "gpt-4o" in text


# --- CSV -----------------------------------------------------------------------------------------


def test_csv_has_a_row_per_line_and_a_total_row_equal_to_the_statement_total(acme):
    statement = finalized(acme)
    rows = list(csv.DictReader(io.StringIO(statement_csv(statement))))

    assert list(rows[0]) == list(STATEMENT_CSV_COLUMNS)
    lines, total = rows[:-1], rows[-1]
    assert [row["position"] for row in lines] == [str(position) for position in range(1, len(LINES) + 1)]
    assert (total["kind"], total["amount_usd"]) == ("total", "81.74")
    assert sum(Decimal(row["amount_usd"]) for row in lines) == Decimal(statement.total_cents) / 100
    first = lines[0]
    assert (first["quantity"], first["unit"], first["unit_price"], first["unit_scale"]) == (
        "12345678",
        "tokens",
        "2.500000000",
        "1000000",
    )
    adjustment = next(row for row in lines if row["kind"] == "adjustment")
    assert (adjustment["adjustment_period"], adjustment["amount_usd"]) == ("2026-02", "-1.13")


def test_csv_text_cannot_become_a_spreadsheet_formula(acme):
    line = {**LINES[0], "model": "=HYPERLINK(1)", "description": "+cmd"}
    rows = list(csv.DictReader(io.StringIO(statement_csv(statement_with_lines(acme, lines=[line])))))
    assert (rows[0]["model"], rows[0]["description"]) == ("'=HYPERLINK(1)", "'+cmd")


# --- FOCUS ---------------------------------------------------------------------------------------


@pytest.fixture
def focus_statements(acme):
    """A finalized March statement of acme (New York) adjusting February, whose finalized statement
    exists, and a draft of another tenant (UTC) adjusting a month that has no statement."""
    statement_with_lines(
        acme,
        lines=[],
        period_key="2026-02",
        period_start=datetime(2026, 2, 1, 5, tzinfo=UTC),
        period_end=datetime(2026, 3, 1, 5, tzinfo=UTC),
        status="finalized",
        number="CB-2026-000017",
    )
    march = finalized(acme)
    beta = TenantFactory(slug="beta", name="Beta Team", is_billable=True, time_zone="UTC")
    draft = statement_with_lines(
        beta,
        lines=[
            {**LINES[0], "tenant_slug": "beta", "amount_cents": 1001},
            {
                **LINES[-1],
                "description": "Usage reported late for 2026-01",
                "adjustment_period_key": "2026-01",
                "amount_cents": 250,
            },
        ],
        period_start=datetime(2026, 3, 1, tzinfo=UTC),
        period_end=datetime(2026, 4, 1, tzinfo=UTC),
    )
    return march, draft


def test_focus_rows_have_every_mandatory_column_and_add_up_per_invoice(focus_statements):
    march, draft = focus_statements
    rows = list(focus_rows([march, draft]))

    assert set(FOCUS_MANDATORY_COLUMNS) <= set(FOCUS_COLUMNS)
    assert len(rows) == len(LINES) + 2
    billed: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        assert list(row) == list(FOCUS_COLUMNS)
        for column in FOCUS_MANDATORY_COLUMNS:
            nullable = column == "ChargeClass" or (
                row["ChargeCategory"] == "Adjustment" and column in ("PricingQuantity", "PricingUnit")
            )
            assert nullable or row[column], (column, row["ChargeDescription"])
        for column in ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row[column]), row[column]
        assert row["ServiceCategory"] == "AI and Machine Learning"
        assert row["ChargeFrequency"] == "Usage-Based"
        assert row["EffectiveCost"] == row["ContractedCost"] == row["BilledCost"]
        billed[row["InvoiceId"]] += Decimal(row["BilledCost"])
    assert billed == {
        "CB-2026-000042": Decimal(march.total_cents) / 100,
        f"DRAFT-{draft.pk}": Decimal(draft.total_cents) / 100,
    }


def test_focus_adjustments_are_corrections_of_the_adjusted_month(focus_statements):
    march, draft = focus_statements
    rows = list(focus_rows([march, draft]))
    adjustments = [row for row in rows if row["x_LineKind"] == "adjustment"]
    others = [row for row in rows if row["x_LineKind"] != "adjustment"]

    assert [(row["ChargeCategory"], row["ChargeClass"]) for row in adjustments] == [
        ("Adjustment", "Correction")
    ] * 2
    february, january = adjustments
    assert (february["ChargePeriodStart"], february["ChargePeriodEnd"]) == (
        "2026-02-01T05:00:00Z",
        "2026-03-01T05:00:00Z",
    )
    assert (february["BillingPeriodStart"], february["BillingPeriodEnd"]) == (
        "2026-03-01T05:00:00Z",
        "2026-04-01T04:00:00Z",
    )
    # No January statement exists: the month of the statement's zone (UTC).
    assert (january["ChargePeriodStart"], january["ChargePeriodEnd"]) == (
        "2026-01-01T00:00:00Z",
        "2026-02-01T00:00:00Z",
    )
    for row in others:
        assert (row["ChargeCategory"], row["ChargeClass"]) == ("Usage", "")
        assert (row["ChargePeriodStart"], row["ChargePeriodEnd"]) == (
            row["BillingPeriodStart"],
            row["BillingPeriodEnd"],
        )


def test_focus_columns_of_token_markup_and_draft_lines(focus_statements):
    march, draft = focus_statements
    rows = list(focus_rows([march, draft]))
    tokens = rows[0]
    assert tokens["BillingAccountId"] == "acme"
    assert tokens["BillingAccountName"] == "Acme Research"
    assert tokens["InvoiceIssuerName"] == "chargeback"
    assert (tokens["ProviderName"], tokens["PublisherName"], tokens["ServiceName"]) == (
        "openai",
        "openai",
        "openai gpt-4o",
    )
    assert (tokens["SkuId"], tokens["SkuPriceId"], tokens["SkuMeter"]) == (
        "openai/gpt-4o",
        "openai/gpt-4o/uncached_input",
        "uncached_input",
    )
    assert (tokens["ConsumedQuantity"], tokens["ConsumedUnit"]) == ("12345678", "Tokens")
    assert (tokens["PricingQuantity"], tokens["PricingUnit"]) == ("12.345678", "1000000 Tokens")
    assert tokens["ListUnitPrice"] == tokens["ContractedUnitPrice"] == "2.5"
    assert tokens["ListCost"] == tokens["BilledCost"] == "30.86"
    assert (tokens["x_TokenType"], tokens["x_Model"], tokens["x_StatementStatus"]) == (
        "uncached_input",
        "gpt-4o",
        "finalized",
    )

    markup = next(row for row in rows if row["x_LineKind"] == "markup")
    assert (markup["BilledCost"], markup["ListCost"]) == ("5.73", "0.00")
    assert (markup["PricingQuantity"], markup["PricingUnit"]) == ("1", "Charges")
    assert markup["ProviderName"] == "chargeback"  # no LLM provider: the issuer

    shared = next(row for row in rows if row["x_LineKind"] == "shared")
    assert shared["SubAccountId"] == "platform-pool"

    draft_rows = [row for row in rows if row["BillingAccountId"] == "beta"]
    assert {row["InvoiceId"] for row in draft_rows} == {f"DRAFT-{draft.pk}"}
    assert {row["x_StatementStatus"] for row in draft_rows} == {"draft"}


def test_focus_csv_streams_a_header_and_one_line_per_statement_line(focus_statements):
    stream = focus_csv(focus_statements)
    assert inspect.isgenerator(stream)
    reader = csv.DictReader(io.StringIO("".join(stream)))
    rows = list(reader)
    assert reader.fieldnames == list(FOCUS_COLUMNS)
    assert len(rows) == len(LINES) + 2
    assert sum(Decimal(row["BilledCost"]) for row in rows) == Decimal(
        sum(statement.total_cents for statement in focus_statements)
    ) / Decimal(100)
