"""Charts as SVG geometry computed in Python and drawn by a template: no JavaScript, works offline.

Every chart carries a title, a description for screen readers, axis labels with units, a legend,
a `<title>` tooltip on every bar and point, value labels where they fit, and the same figures as a
data table (`table_headers`, `table_rows`) shown under it on demand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dashboards.formatting import NOT_AVAILABLE

# Okabe-Ito's palette, which stays distinguishable with the common colour-vision deficiencies;
# the last colour is for "Other".
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
OTHER_COLOR = "#999999"
ERROR_COLOR = "#D55E00"

WIDTH = 720
HEIGHT = 260
PLOT_LEFT = 76
PLOT_RIGHT = WIDTH - 16
PLOT_TOP = 22
PLOT_BOTTOM = HEIGHT - 46
MAX_X_LABELS = 10
# Value labels above bars only while they fit side by side.
MAX_VALUE_LABELS = 16


@dataclass(frozen=True)
class Bucket:
    """One step of the x axis: a short label for the axis and a long one for tooltips and tables."""

    short_label: str
    long_label: str


@dataclass
class Tick:
    position: float
    label: str


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    tooltip: str


@dataclass
class Point:
    x: float
    y: float
    tooltip: str


@dataclass
class Line:
    label: str
    color: str
    path: str
    points: list[Point]
    dashed: bool = False


@dataclass
class ValueLabel:
    x: float
    y: float
    text: str


@dataclass
class LegendEntry:
    label: str
    color: str
    dashed: bool = False


@dataclass
class Chart:
    chart_id: str
    title: str
    description: str
    y_label: str
    x_label: str
    width: int = WIDTH
    height: int = HEIGHT
    plot_left: int = PLOT_LEFT
    plot_right: int = PLOT_RIGHT
    plot_top: int = PLOT_TOP
    plot_bottom: int = PLOT_BOTTOM
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    value_labels: list[ValueLabel] = field(default_factory=list)
    legend: list[LegendEntry] = field(default_factory=list)
    table_headers: list[str] = field(default_factory=list)
    table_rows: list[list[str]] = field(default_factory=list)
    is_empty: bool = True

    @property
    def x_label_y(self) -> int:
        return self.height - 8

    @property
    def y_label_x(self) -> int:
        return 14

    @property
    def plot_middle_y(self) -> float:
        return (self.plot_top + self.plot_bottom) / 2

    @property
    def plot_middle_x(self) -> float:
        return (self.plot_left + self.plot_right) / 2

    @property
    def tick_label_x(self) -> int:
        return self.plot_left - 6

    @property
    def x_tick_label_y(self) -> int:
        return self.plot_bottom + 16


def nice_ticks(maximum: float, count: int = 5) -> list[float]:
    """0 and round steps (1, 2, 2.5 or 5 times a power of ten) up to at least `maximum`."""
    if maximum <= 0 or not math.isfinite(maximum):
        return [0.0, 1.0]
    raw_step = maximum / count
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(factor * magnitude for factor in (1, 2, 2.5, 5, 10) if factor * magnitude >= raw_step)
    steps = math.ceil(maximum / step - 1e-9)
    return [index * step for index in range(steps + 1)]


def _x_ticks(buckets: Sequence[Bucket], centre: Callable[[int], float]) -> list[Tick]:
    every = max(1, math.ceil(len(buckets) / MAX_X_LABELS))
    return [
        Tick(centre(index), bucket.short_label) for index, bucket in enumerate(buckets) if index % every == 0
    ]


def _y_scale(
    maximum: float, axis_format: Callable[[float], str]
) -> tuple[list[Tick], Callable[[float], float]]:
    ticks = nice_ticks(maximum)
    top = ticks[-1]

    def y_of(value: float) -> float:
        return PLOT_BOTTOM - (PLOT_BOTTOM - PLOT_TOP) * value / top

    return [Tick(y_of(tick), axis_format(tick)) for tick in ticks], y_of


def stacked_bar_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    y_label: str,
    x_label: str,
    buckets: Sequence[Bucket],
    series: Sequence[tuple[str, Sequence[int]]],
    value_format: Callable[[int], str],
    axis_format: Callable[[float], str],
    colors: Sequence[str] | None = None,
    tooltip_notes: Sequence[Sequence[str]] | None = None,
) -> Chart:
    """Bars per bucket, one stacked segment per series (in the order given, first at the bottom).

    `tooltip_notes[series][bucket]`, when given, is appended to that segment's tooltip."""
    colors = list(colors or [])
    palette = [colors[index] if index < len(colors) else _color(index, name) for index, (name, _) in
               enumerate(series)]  # fmt: skip
    chart = Chart(chart_id=chart_id, title=title, description=description, y_label=y_label, x_label=x_label)
    totals = [sum(values[index] for _, values in series) for index in range(len(buckets))]
    chart.is_empty = not any(totals)
    chart.y_ticks, y_of = _y_scale(max(totals, default=0), axis_format)
    slot = (PLOT_RIGHT - PLOT_LEFT) / max(len(buckets), 1)
    bar_width = max(slot * 0.72, 1.0)

    def centre(index: int) -> float:
        return PLOT_LEFT + slot * (index + 0.5)

    chart.x_ticks = _x_ticks(buckets, centre)
    for index, bucket in enumerate(buckets):
        base = 0
        for series_index, ((name, values), color) in enumerate(zip(series, palette, strict=True)):
            value = values[index]
            if value <= 0:
                continue
            note = tooltip_notes[series_index][index] if tooltip_notes else ""
            top, bottom = y_of(base + value), y_of(base)
            chart.bars.append(
                Bar(
                    x=round(centre(index) - bar_width / 2, 2),
                    y=round(top, 2),
                    width=round(bar_width, 2),
                    height=round(max(bottom - top, 0.5), 2),
                    color=color,
                    tooltip=f"{bucket.long_label} · {name}: {value_format(value)}{note}",
                )
            )
            base += value
        if len(buckets) <= MAX_VALUE_LABELS and totals[index]:
            chart.value_labels.append(ValueLabel(round(centre(index), 2), round(y_of(base) - 4, 2),
                                                 value_format(totals[index])))  # fmt: skip
    chart.legend = [LegendEntry(name, color) for (name, _), color in zip(series, palette, strict=True)]
    chart.table_headers = ["Period", *(name for name, _ in series), "Total"]
    chart.table_rows = [
        [
            bucket.long_label,
            *(value_format(values[index]) for _, values in series),
            value_format(totals[index]),
        ]
        for index, bucket in enumerate(buckets)
    ]
    return chart


def line_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    y_label: str,
    x_label: str,
    buckets: Sequence[Bucket],
    series: Sequence[tuple[str, Sequence[float | None]]],
    value_format: Callable[[float], str],
    axis_format: Callable[[float], str],
    colors: Sequence[str] | None = None,
    dashed: Sequence[bool] = (),
) -> Chart:
    """One line per series; a bucket without a value (None) breaks the line."""
    colors = list(colors or PALETTE)
    chart = Chart(chart_id=chart_id, title=title, description=description, y_label=y_label, x_label=x_label)
    known = [value for _, values in series for value in values if value is not None]
    chart.is_empty = not known
    chart.y_ticks, y_of = _y_scale(max(known, default=0), axis_format)
    slot = (PLOT_RIGHT - PLOT_LEFT) / max(len(buckets), 1)

    def centre(index: int) -> float:
        return PLOT_LEFT + slot * (index + 0.5)

    chart.x_ticks = _x_ticks(buckets, centre)
    for series_index, (name, values) in enumerate(series):
        color = colors[series_index % len(colors)]
        is_dashed = series_index < len(dashed) and dashed[series_index]
        commands, points, drawing = [], [], False
        for index, value in enumerate(values):
            if value is None:
                drawing = False
                continue
            x, y = round(centre(index), 2), round(y_of(value), 2)
            commands.append(f"{'L' if drawing else 'M'}{x} {y}")
            drawing = True
            points.append(Point(x, y, f"{buckets[index].long_label} · {name}: {value_format(value)}"))
        chart.lines.append(Line(name, color, " ".join(commands), points, is_dashed))
        chart.legend.append(LegendEntry(name, color, is_dashed))
    chart.table_headers = ["Period", *(name for name, _ in series)]
    chart.table_rows = [
        [
            bucket.long_label,
            *(
                NOT_AVAILABLE if values[index] is None else value_format(values[index])
                for _, values in series
            ),
        ]
        for index, bucket in enumerate(buckets)
    ]
    return chart


def _color(index: int, name: str) -> str:
    if name == "Other":
        return OTHER_COLOR
    return PALETTE[index % len(PALETTE)]
