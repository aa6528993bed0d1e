"""The README picture's renderer: windows that fit a short run, counts as integers, the
dashboard's own layout (the drawing from real range queries is in test_prometheus_e2e)."""

from __future__ import annotations

from dashboards import assets
from dashboards.render import SHORT_WINDOW, fit_windows, fmt, layout


def test_an_hour_rate_from_a_recording_rule_is_computed_over_a_window_that_fits_the_run():
    expr = 'sum(agent_name_model_id:agent_estimated_cost_dollars:rate1h{agent_name=~".*", model_id=~".*"}) * 3600'
    fitted = fit_windows(expr, run_seconds=95)
    assert fitted == (f"sum((sum by (agent_name, model_id) (rate(agent_estimated_cost_dollars_total[{SHORT_WINDOW}s]))))"
                      " * 3600")  # fmt: skip


def test_day_long_windows_cover_the_run_and_short_ones_stay():
    assert fit_windows("increase(agent_estimated_cost_dollars_total[1d])", 95) == (
        "increase(agent_estimated_cost_dollars_total[95s])"
    )
    assert "[95s]" in fit_windows('agent_name:agent_tokens_per_run:avg1d{agent_name=~".*"}', 95)
    assert fit_windows("rate(agent_requests_total[15s])", 95) == "rate(agent_requests_total[15s])"


def test_a_recorded_series_with_a_real_selector_is_left_alone():
    expr = 'agent_name:agent_tokens_per_run:avg1d{agent_name="support"}'
    assert fit_windows(expr, 95) == expr


def test_every_panel_expression_fits_a_short_run():
    for _title, expr in assets.dashboard_expressions():
        fitted = fit_windows(assets.substitute(expr.replace("$__range", "95s"), window="15s"), 95)
        assert not any(f"[{w}]" in fitted for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")), fitted


def test_counts_are_integers_and_money_keeps_its_cents():
    assert fmt(82.95, "short", count=True) == "83"
    assert fmt(12345.4, "short", count=True) == "12,345"
    assert fmt(2.7529, "currencyUSD") == "$2.75"
    assert fmt(0.00331, "currencyUSD") == "$0.00331"
    assert fmt(0.05, "percentunit") == "5%"


def test_layout_keeps_panels_inside_the_grid_without_overlap():
    placed = [(p, box) for p, box in layout(assets.dashboard()) if p["type"] != "row"]
    assert {p["title"] for p, _ in placed} == {p["title"] for p in assets.panels()}
    for n, (_p, (x, y, w, h)) in enumerate(placed):
        assert 0 <= x and x + w <= 24
        for _q, (qx, qy, qw, qh) in placed[:n]:
            assert not (x < qx + qw and qx < x + w and y < qy + qh and qy < y + h)
