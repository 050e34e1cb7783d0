"""The transparency report as Markdown or HTML: Jinja2 templates (escaping on, for HTML), and
charts drawn by pygal as SVG put inline — one self-contained file, no request to anywhere."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

from abusebot.transparency import (
    ACTION_KINDS,
    ACTORS,
    CHANNEL_LABELS,
    CHANNELS,
    DEFINITIONS,
    Stats,
    folded,
    month_labels,
    monthly_cells,
    published,
    small_counts_note,
    summary_rows,
)

_ENV: dict[bool, jinja2.Environment] = {}
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_SCRIPT = re.compile(r"<script\b.*?</script>", re.DOTALL | re.IGNORECASE)


def _environment(html: bool) -> jinja2.Environment:
    if html not in _ENV:
        _ENV[html] = jinja2.Environment(
            loader=jinja2.PackageLoader("abusebot", "templates"),
            autoescape=html,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            undefined=jinja2.StrictUndefined,
        )
    return _ENV[html]


def _chart(kind: str, title: str, labels: Sequence[str], series: Mapping[str, Sequence[int]]) -> str:
    """One chart as inline SVG (pygal, no script: the page makes no request)."""
    import pygal
    from pygal.style import Style

    style = Style(
        background="transparent",
        plot_background="transparent",
        font_family="system-ui, sans-serif",
        colors=("#3465a4", "#cc0000", "#73d216", "#f57900", "#75507b", "#c4a000"),
    )
    options: dict[str, Any] = {
        "js": [],
        "disable_xml_declaration": True,
        "style": style,
        "width": 760,
        "height": 360,
        "explicit_size": False,
        "legend_at_bottom": True,
        "title": title,
        "print_values": False,
    }
    chart: Any
    if kind == "pie":
        chart = pygal.Pie(inner_radius=0.45, **options)
        for name, values in series.items():
            chart.add(name, list(values))
    else:
        chart = pygal.StackedBar(x_label_rotation=30, **options) if kind == "stacked" else pygal.Bar(**options)
        chart.x_labels = list(labels)
        for name, values in series.items():
            chart.add(name, list(values))
    svg: str = chart.render(is_unicode=True)
    # pygal puts its settings in a <script> even with js=[]: nothing runs in the report.
    return _SCRIPT.sub("", _COMMENT.sub("", svg))


def charts(stats: Stats) -> dict[str, str]:
    """The charts of the HTML report: reports by channel, actions by who took them, and for a
    year the actions month by month and the outcomes. A cell that is not published as a number
    ("fewer than N", withheld) is drawn as 0: a chart cannot say more than the table."""
    n = stats.min_count
    p = published(stats.figures, n)

    def drawn(value: object) -> int:
        return value if isinstance(value, int) else 0

    sanctions = [kind for kind in ACTION_KINDS if kind != "removed messages"]
    out = {
        "channels": _chart(
            "pie",
            "Reports by channel",
            [],
            {CHANNEL_LABELS[c]: [drawn(p.reports[c])] for c in CHANNELS if drawn(p.reports[c])},
        ),
        "actors": _chart(
            "stacked",
            "Sanctions by who took them",
            ["moderation team", "room admins", "automatic"],
            {kind: [drawn(p.actions[a][kind]) for a in ACTORS] for kind in sanctions},
        ),
    }
    if stats.period.yearly:
        cells = monthly_cells(stats)
        out["monthly"] = _chart(
            "stacked",
            "Actions by kind, month by month",
            month_labels(cells),
            {kind: [drawn(cells[m][kind]) for m in cells] for kind in ACTION_KINDS},
        )
        outcomes = {k: [drawn(v)] for k, v in folded(stats.outcomes, n) if drawn(v)}
        out["outcomes"] = _chart("pie", "Outcomes of reports", [], outcomes)
    return out


def render_template(stats: Stats, fmt: str) -> str:
    """Render ``report.md.j2`` or ``report.html.j2``."""
    html = fmt == "html"
    template = _environment(html).get_template("report.html.j2" if html else "report.md.j2")
    n = stats.min_count
    context: dict[str, Any] = {
        "stats": stats,
        "period": stats.period.label,
        "previous": stats.period.previous().label,
        "yearly": stats.period.yearly,
        "rows": summary_rows(stats),
        "min_count": n,
        "small_counts": small_counts_note(n),
        "definitions": DEFINITIONS,
        "by_room": [(name, str(count)) for name, count in folded(stats.by_room, n)],
        "by_violation": [(name, str(count)) for name, count in folded(stats.by_violation, n)],
        "outcomes": [(name, str(count)) for name, count in folded(stats.outcomes, n)],
        "months": month_labels(stats.monthly),
        "monthly": [[str(cells[k]) for k in ACTION_KINDS] for cells in monthly_cells(stats).values()],
        "kinds": ACTION_KINDS,
        "notes": stats.notes,
        "charts": charts(stats) if html else {},
    }
    return template.render(**context)
