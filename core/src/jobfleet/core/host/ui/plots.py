"""The run page's plots, drawn on the server as SVG text (no script, nothing to download).

Every text that comes from the ledger (task names above all) is escaped here with
`html.escape`; the functions return `Markup` so that the templates insert the SVG as it is.
Points are `<circle class="point">`, bars `<rect class="bar">`: what the tests count.
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Final

from markupsafe import Markup

from jobfleet.core.host.ledger.states import InstanceState
from jobfleet.core.host.ui.data import SampledInstance, name_pattern
from jobfleet.core.resources import MIB, format_memory, format_runtime

WIDTH: Final = 560
HEIGHT: Final = 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 16, 40
# Colours of the task name patterns, in order of how many attempts each has; the rest: grey.
PALETTE: Final = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                  "#17becf")  # fmt: skip
OTHER: Final = "#7f7f7f"
# The timeline's bands, bottom to top, and their colours.
BANDS: Final = (("done", "#2ca02c"), ("failed", "#d62728"), ("running", "#1f77b4"),
                ("waiting", "#c7c7c7"))  # fmt: skip
TIMELINE_POINTS: Final = 60


def pattern_colours(instances: Sequence[SampledInstance]) -> dict[str, str]:
    """A colour for each of the most common task name patterns."""
    counts = Counter(name_pattern(instance.name) for instance in instances)
    return {pattern: PALETTE[i] for i, (pattern, _) in enumerate(counts.most_common(len(PALETTE)))}


def _frame(plot_id: str, title: str, body: list[str], x_label: str, y_label: str) -> Markup:
    head = (
        f'<svg id="{escape(plot_id)}" class="plot" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f'<line class="axis" x1="{_LEFT}" y1="{HEIGHT - _BOTTOM}" x2="{WIDTH - _RIGHT}" '
        f'y2="{HEIGHT - _BOTTOM}"/>'
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{HEIGHT - _BOTTOM}"/>'
        f'<text class="label" x="{(WIDTH + _LEFT) / 2}" y="{HEIGHT - 6}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
        f'<text class="label" x="12" y="{(HEIGHT - _BOTTOM + _TOP) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(HEIGHT - _BOTTOM + _TOP) / 2})">{escape(y_label)}</text>'
    )
    # Every ledger text in `body` went through escape() where it was written.
    return Markup(head + "".join(body) + "</svg>")  # noqa: S704


def _empty(plot_id: str, title: str, why: str) -> Markup:
    return Markup(  # noqa: S704 (every value escaped)
        f'<svg id="{escape(plot_id)}" class="plot empty" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} 60" role="img" aria-label="{escape(title)}">'
        f'<title>{escape(title)}</title><text x="10" y="35">{escape(why)}</text></svg>'
    )


@dataclass(frozen=True)
class _Scale:
    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.high - self.low or 1.0
        return self.start + (value - self.low) / span * (self.end - self.start)


def _ticks(scale: _Scale, axis: str, label: Callable[[float], str], count: int = 4) -> list[str]:
    parts = []
    for i in range(count + 1):
        value = scale.low + (scale.high - scale.low) * i / count
        at = scale(value)
        if axis == "x":
            parts.append(
                f'<text class="tick" x="{at:.1f}" y="{HEIGHT - _BOTTOM + 14}" '
                f'text-anchor="middle">{escape(label(value))}</text>'
            )
        else:
            parts.append(
                f'<text class="tick" x="{_LEFT - 4}" y="{at + 4:.1f}" '
                f'text-anchor="end">{escape(label(value))}</text>'
            )
    return parts


def _memory_label(value: float) -> str:
    return format_memory(int(value)) if value >= 1024 else f"{int(value)}B"


def _seconds_label(value: float) -> str:
    return f"{value:.1f}s" if value < 60 else format_runtime(round(value))


def scatter(
    plot_id: str,
    title: str,
    points: Sequence[tuple[float, float, str, str]],
    *,
    x_label: str,
    y_label: str,
    label: Callable[[float], str],
) -> Markup:
    """Requested (x) against used (y), one circle per attempt, coloured by its pattern's
    colour; the diagonal is "used all it asked for". `points`: (x, y, colour, tooltip)."""
    if not points:
        return _empty(plot_id, title, "No attempt has reported both a request and its usage yet.")
    high = max(max(x for x, *_ in points), max(y for _, y, *_ in points)) * 1.05 or 1.0
    xs = _Scale(0, high, _LEFT, WIDTH - _RIGHT)
    ys = _Scale(0, high, HEIGHT - _BOTTOM, _TOP)
    body = [
        f'<line class="diagonal" x1="{xs(0):.1f}" y1="{ys(0):.1f}" x2="{xs(high):.1f}" '
        f'y2="{ys(high):.1f}"/>',
        *_ticks(xs, "x", label),
        *_ticks(ys, "y", label),
    ]
    for x, y, colour, tip in points:
        body.append(
            f'<circle class="point" cx="{xs(x):.1f}" cy="{ys(y):.1f}" r="3" fill="{colour}">'
            f"<title>{escape(tip)}</title></circle>"
        )
    return _frame(plot_id, title, body, x_label, y_label)


def memory_scatter(instances: Sequence[SampledInstance], colours: dict[str, str]) -> Markup:
    points = [
        (
            float(i.requested_memory),
            float(i.maxrss),
            colours.get(name_pattern(i.name), OTHER),
            f"{i.name} (attempt {i.attempt}): used {format_memory(i.maxrss)} of "
            f"{format_memory(i.requested_memory)}",
        )
        for i in instances
        if i.requested_memory is not None and i.maxrss is not None
    ]
    return scatter("plot-memory", "Memory: requested vs peak used", points,
                   x_label="requested memory", y_label="peak memory (maxrss)",
                   label=_memory_label)  # fmt: skip


def runtime_scatter(instances: Sequence[SampledInstance], colours: dict[str, str]) -> Markup:
    points = [
        (
            float(i.requested_runtime),
            float(i.wallclock),
            colours.get(name_pattern(i.name), OTHER),
            f"{i.name} (attempt {i.attempt}): ran {_seconds_label(i.wallclock)} of "
            f"{_seconds_label(i.requested_runtime)}",
        )
        for i in instances
        if i.requested_runtime is not None and i.wallclock is not None
    ]
    return scatter("plot-runtime", "Runtime: requested vs wall-clock", points,
                   x_label="requested runtime", y_label="wall-clock time",
                   label=_seconds_label)  # fmt: skip


def histogram(
    plot_id: str,
    title: str,
    values: Sequence[float],
    edges: Sequence[float],
    *,
    x_label: str,
    edge_label: Callable[[float], str],
) -> Markup:
    """One bar per bin [edges[i], edges[i+1]); values beyond the last edge go to the last bin."""
    if not values:
        return _empty(plot_id, title, "No attempt has reported this yet.")
    counts = [0] * (len(edges) - 1)
    for value in values:
        index = next((i for i in range(len(counts)) if value < edges[i + 1]), len(counts) - 1)
        counts[max(0, index)] += 1
    # Whole-number ticks: the axis ends at four steps of a whole number of attempts.
    step = max(1, math.ceil(max(counts) / 4))
    ys = _Scale(0, 4 * step, HEIGHT - _BOTTOM, _TOP)
    width = (WIDTH - _LEFT - _RIGHT) / len(counts)
    body = _ticks(ys, "y", lambda value: f"{value:,.0f}")
    for i, count in enumerate(counts):
        x = _LEFT + i * width
        top = ys(count)
        body.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{top:.1f}" width="{width - 2:.1f}" '
            f'height="{HEIGHT - _BOTTOM - top:.1f}">'
            f"<title>{escape(edge_label(edges[i]))}–{escape(edge_label(edges[i + 1]))}: "
            f"{count}</title></rect>"
        )
        if i % max(1, len(counts) // 5) == 0:
            body.append(
                f'<text class="tick" x="{x:.1f}" y="{HEIGHT - _BOTTOM + 14}">'
                f"{escape(edge_label(edges[i]))}</text>"
            )
    return _frame(plot_id, title, body, x_label, "attempts")


def cpu_efficiency(instances: Sequence[SampledInstance]) -> Markup:
    """CPU time over (wall-clock × cores requested), per attempt that reported both."""
    values = [
        i.cpu / (i.wallclock * (i.cores or 1.0))
        for i in instances
        if i.cpu is not None and i.wallclock
    ]
    edges = [step / 10 for step in range(0, 11)] + [math.inf]
    return histogram("plot-cpu", "CPU efficiency (CPU time / (wall-clock × cores))",
                     [100 * v for v in values], [100 * e for e in edges],
                     x_label="CPU efficiency, %",
                     edge_label=lambda e: "∞" if math.isinf(e) else f"{e:.0f}%")  # fmt: skip


def timeline(
    instances: Sequence[SampledInstance], total: int, now: datetime
) -> tuple[Markup, list[dict[str, float]]]:
    """How many instances were waiting, running, done and failed over the run's life, as
    stacked bands (scaled up from the sample to `total`); also the points, for the tests."""
    if not instances:
        return _empty("plot-timeline", "Instance states over time", "No instance yet."), []
    start = min(i.created_at for i in instances)
    end = max([now if i.ended_at is None else i.ended_at for i in instances])
    span = max((end - start).total_seconds(), 1.0)
    factor = total / len(instances) if total > len(instances) else 1.0
    moments = [start + timedelta(seconds=span * k / (TIMELINE_POINTS - 1))
               for k in range(TIMELINE_POINTS)]  # fmt: skip
    # An instance waits from its creation, runs from its start and is over (done or failed)
    # from its end: at each moment, counts of those times up to it, by bisection.
    created = sorted(i.created_at for i in instances)
    started = sorted(i.started_at for i in instances if i.started_at is not None)
    started_ended = sorted(
        i.ended_at for i in instances if i.started_at is not None and i.ended_at is not None
    )
    done = sorted(i.ended_at for i in instances
                  if i.ended_at is not None and i.state == InstanceState.DONE)  # fmt: skip
    failed = sorted(i.ended_at for i in instances
                    if i.ended_at is not None and i.state != InstanceState.DONE)  # fmt: skip
    series: list[dict[str, float]] = []
    for moment in moments:
        over_done, over_failed = bisect_right(done, moment), bisect_right(failed, moment)
        running = bisect_right(started, moment) - bisect_right(started_ended, moment)
        waiting = bisect_right(created, moment) - running - over_done - over_failed
        series.append(
            {
                "done": over_done * factor,
                "failed": over_failed * factor,
                "running": running * factor,
                "waiting": max(0, waiting) * factor,
            }
        )
    xs = _Scale(0, span, _LEFT, WIDTH - _RIGHT)
    peak = max(sum(point.values()) for point in series) or 1.0
    ys = _Scale(0, peak * 1.05, HEIGHT - _BOTTOM, _TOP)
    body = [*_ticks(ys, "y", lambda value: f"{value:,.0f}")]
    body += _ticks(xs, "x", lambda value: _seconds_label(value))
    below = [0.0] * len(series)
    for band, colour in BANDS:
        above = [below[k] + series[k][band] for k in range(len(series))]
        upper = [f"{xs(span * k / (len(series) - 1)):.1f},{ys(above[k]):.1f}"
                 for k in range(len(series))]  # fmt: skip
        lower = [f"{xs(span * k / (len(series) - 1)):.1f},{ys(below[k]):.1f}"
                 for k in reversed(range(len(series)))]  # fmt: skip
        body.append(
            f'<polygon class="band band-{band}" fill="{colour}" points="{" ".join(upper + lower)}">'
            f"<title>{band}</title></polygon>"
        )
        below = above
    return _frame("plot-timeline", "Instance states over time", body,
                  "time since the run's first instance", "instances"), series  # fmt: skip


@dataclass(frozen=True)
class PatternUsage:
    """Right-sizing help for one kind of task: what it asked for and what it used."""

    pattern: str
    colour: str
    attempts: int
    requested_memory: int | None
    median_memory: int | None
    max_memory: int | None
    median_runtime: float | None
    max_runtime: float | None
    suggested_memory: int | None
    """The largest peak plus a fifth, rounded up to 64 MiB: a request that would have fit."""


def pattern_usage(
    instances: Sequence[SampledInstance], colours: dict[str, str]
) -> list[PatternUsage]:
    by_pattern: dict[str, list[SampledInstance]] = {}
    for instance in instances:
        by_pattern.setdefault(name_pattern(instance.name), []).append(instance)
    rows = []
    for pattern, members in sorted(by_pattern.items(), key=lambda item: -len(item[1])):
        used = [i.maxrss for i in members if i.maxrss is not None]
        runtimes = [i.wallclock for i in members if i.wallclock is not None]
        requested = [i.requested_memory for i in members if i.requested_memory is not None]
        peak = max(used) if used else None
        rows.append(
            PatternUsage(
                pattern=pattern,
                colour=colours.get(pattern, OTHER),
                attempts=len(members),
                requested_memory=max(requested) if requested else None,
                median_memory=int(statistics.median(used)) if used else None,
                max_memory=peak,
                median_runtime=statistics.median(runtimes) if runtimes else None,
                max_runtime=max(runtimes) if runtimes else None,
                suggested_memory=None
                if peak is None
                else math.ceil(peak * 1.2 / (64 * MIB)) * 64 * MIB,
            )
        )
    return rows
