"""Chart geometry: round ticks, stacked bars in proportion, lines broken where a value is missing."""

import itertools

from django.http import QueryDict

from dashboards import charts, formatting
from dashboards.filters import PageFilters, page_filters_from

BUCKETS = [charts.Bucket(f"d{index}", f"day {index}") for index in range(4)]


def test_ticks_are_round_and_cover_the_maximum():
    assert charts.nice_ticks(0) == [0.0, 1.0]
    assert charts.nice_ticks(9.3) == [0, 2, 4, 6, 8, 10]
    ticks = charts.nice_ticks(1234)
    assert ticks[0] == 0 and ticks[-1] >= 1234 and len(ticks) <= 7
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1


def test_stacked_bars_are_in_proportion_with_tooltips_legend_and_table():
    chart = charts.stacked_bar_chart(
        chart_id="c",
        title="Cost",
        description="d",
        y_label="USD",
        x_label="Day",
        buckets=BUCKETS,
        series=[("a", [10, 0, 30, 0]), ("b", [10, 0, 0, 0])],
        value_format=str,
        axis_format=str,
    )
    assert not chart.is_empty
    # Zero segments are not drawn; the two segments of day 0 are as tall as each other.
    assert len(chart.bars) == 3
    day0 = [bar for bar in chart.bars if bar.tooltip.startswith("day 0")]
    assert day0[0].height == day0[1].height
    assert day0[1].y + day0[1].height == day0[0].y  # b sits on top of a
    day2 = next(bar for bar in chart.bars if bar.tooltip.startswith("day 2"))
    assert abs(day2.height - 1.5 * (day0[0].height + day0[1].height)) < 0.1
    assert [label.text for label in chart.value_labels] == ["20", "30"]
    assert [entry.label for entry in chart.legend] == ["a", "b"]
    assert chart.table_rows[0] == ["day 0", "10", "10", "20"]
    assert chart.bars[0].tooltip == "day 0 · a: 10"


def test_an_empty_chart_says_so():
    chart = charts.stacked_bar_chart(
        chart_id="c", title="t", description="d", y_label="y", x_label="x", buckets=BUCKETS,
        series=[], value_format=str, axis_format=str,
    )  # fmt: skip
    assert chart.is_empty and chart.bars == []


def test_lines_break_where_a_value_is_missing():
    chart = charts.line_chart(
        chart_id="l",
        title="t",
        description="d",
        y_label="ms",
        x_label="x",
        buckets=BUCKETS,
        series=[("p50", [1.0, None, 3.0, 4.0])],
        value_format=formatting.milliseconds,
        axis_format=str,
    )
    (line,) = chart.lines
    assert line.path.count("M") == 2 and line.path.count("L") == 1
    assert len(line.points) == 3
    assert chart.table_rows[1] == ["day 1", formatting.NOT_AVAILABLE]


def test_money_reads_exactly_from_nanos():
    assert formatting.usd(1_234_567_890_000) == "$1,234.57"
    assert formatting.usd(4_200_000) == "$0.0042"
    assert formatting.usd(1_580) == "$0.000002"
    assert formatting.usd(0) == "$0.00"
    assert formatting.usd_cents(123456) == "$1,234.56"
    assert formatting.change(150, 100)["text"] == "+50.0%"
    assert formatting.change(5, 0)["text"] == "new"


def test_filters_round_trip_through_the_query_string():
    query = QueryDict(
        "start=2026-03-01&to=2026-03-31&tenant=acme&tag.customer=globex&untagged=feature&page=3"
    )
    filters = page_filters_from(query)
    assert filters.end == "2026-04-01"  # the last day shown is inclusive; the query's end is not
    assert filters.tags == {"customer": "globex", "feature": ""}
    again = page_filters_from(QueryDict(filters.query_string().lstrip("?")))
    assert again == filters
    # The CSV link speaks the API's language: untagged is an empty tag value.
    assert "tag.feature=&" in filters.api_parameters(granularity="day", group_by=("model",)) + "&"
    assert page_filters_from(QueryDict("tag_key=environment&tag_value=staging")).tags == {
        "environment": "staging"
    }
    assert PageFilters().query_string() == ""
