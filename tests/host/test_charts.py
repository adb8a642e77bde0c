"""lab/charts.py on canned data: each chart is a PNG, and what it draws is the data it was given
(read back from the Figure the function returns), whatever columns the pulse-loss table holds."""

import struct

import pytest

from lab import charts


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def lines_by_label(ax):
    return {l.get_label(): l for l in ax.get_lines()}


def test_meter_chart_draws_the_true_load_the_readings_and_the_energy(tmp_path):
    truth = [(6.0, 200.0), (6.5, 2200.0), (7.0, 250.0)]
    readings = [(6.1, 210.5, 0.001), (6.6, 2190.0, 0.0021), (7.1, 0.0, 0.0025)]
    played = [(6.0, 0), (6.5, 15), (7.0, 25)]
    path = tmp_path / "out" / "sim-meter-1.png"  # the folder is made
    fig = charts.meter_chart(str(path), "meter-1", truth, readings, played, 10000, clock_hours=True)
    assert png_size(path) == (900, 620)
    top, bottom = fig.axes
    power = lines_by_label(top)
    assert list(power["true load (played into the pulse input)"].get_ydata()) == [200, 2200, 250]
    assert list(power["power_w at the server (a dot per reading)"].get_ydata()) == [210.5, 2190, 0]
    energy = lines_by_label(bottom)
    assert list(energy["pulses played / 10000 imp/kWh"].get_ydata()) == [0, 0.0015, 0.0025]
    assert list(energy["energy_kwh at the server (held until the next reading)"].get_xdata()) == \
        [6.1, 6.6, 7.1]
    # The x axis reads as a clock: 6.5 h is 06:30, and hours past midnight wrap.
    fmt = bottom.xaxis.get_major_formatter()
    assert fmt(6.5, 0) == "06:30" and fmt(25.25, 0) == "01:15"
    assert bottom.get_xlabel() == "simulated time of day"


def test_meter_chart_of_a_constant_load_counts_seconds_and_survives_no_readings(tmp_path):
    fig = charts.meter_chart(str(tmp_path / "c.png"), "m", [(0, 3600), (10, 3600)], [],
                             [(0, 0), (10, 100)], 10000)
    assert fig.axes[1].get_xlabel() == "seconds since the loads started"
    assert (tmp_path / "c.png").stat().st_size > 1000


FLEET = {
    "meters": 4, "outage_s": 60.2, "backoff": {"retry_min_s": 2, "retry_max_s": 300},
    "reconnect": {"per_second": [0, 1, 0, 2, 1]},
    "model": {"peak_p50": 2, "trials": 200},
    "backoff_bound_s": 64.0,
    "per_meter": [{"back_after_s": 3.5}, {"back_after_s": 1.2}, {"back_after_s": 4.0},
                  {"back_after_s": None}],
}


def test_fleet_chart_histogram_is_the_per_second_counts_and_meters_back_are_sorted(tmp_path):
    fig = charts.fleet_chart(str(tmp_path / "fleet.png"), FLEET)
    top, bottom = fig.axes
    assert [p.get_height() for p in top.patches] == [0, 1, 0, 2, 1]
    assert [p.get_x() for p in top.patches] == [0, 1, 2, 3, 4]
    back = lines_by_label(bottom)["meters publishing again"]
    assert list(back.get_xdata()) == [1.2, 3.5, 4.0] and list(back.get_ydata()) == [1, 2, 3]
    assert "1 never back" in bottom.get_xlabel()
    assert list(lines_by_label(bottom)["backoff bound (64 s)"].get_xdata()) == [64, 64]
    png_size(tmp_path / "fleet.png")


RESULTS = {
    "firmware": {"pulse_loss": {
        "hw_counter": {"1": {"0": 0, "0.5": 0, "2": 0}, "200": {"0": 0, "0.5": 0, "2": 0}},
        "interrupt_only": {"17": {"0": 0, "0.5": 14, "2": 90}, "1": {"0": 0, "0.5": 0, "2": 0}}}},
    "baseline": {"pulse_loss": {"interrupt_only": {"1": {"0": 0, "2": 0}, "17": {"0": 0, "2": 90}}}},
}


def test_loss_panels_follow_the_results_numeric_order_first():
    panels = charts.loss_panels(RESULTS)
    assert [p[0] for p in panels] == ["firmware, hw-counter", "firmware, interrupt-only",
                                      "baseline, interrupt-only"]
    title, rates, columns, cells = panels[1]
    assert rates == ["1", "17"] and columns == ["0", "0.5", "2"]
    assert cells[("17", "2")] == 90


def test_loss_chart_draws_every_cell_and_any_column_a_run_adds(tmp_path):
    results = {"firmware": {"pulse_loss": {
        # A column that is not a stall in seconds (the bounce column to come) and a new path.
        "interrupt_only": {"17": {"0": 0, "2": 90, "bounce": 3}, "50": {"0": 1, "2": 288}},
        "hw_counter_debounced": {"17": {"bounce": 0}}}}, "baseline": {}}
    fig = charts.loss_chart(str(tmp_path / "pulse_loss.png"), results)
    assert len(fig.axes) == 2
    by_title = {ax.get_title(loc="left"): ax for ax in fig.axes}
    ax = by_title["firmware, interrupt-only"]
    heights = {}
    for container, label in zip(ax.containers, [t.get_text() for t in ax.get_legend().get_texts()]):
        heights[label] = [b.get_height() for b in container]
    assert heights == {"stall 0 s": [0, 1], "stall 2 s": [90, 288], "bounce": [3]}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["17/s", "50/s"]
    assert by_title["firmware, hw-counter-debounced"].containers[0][0].get_height() == 0
    png_size(tmp_path / "pulse_loss.png")


def test_loss_chart_without_figures_still_writes_a_picture_saying_so(tmp_path):
    fig = charts.loss_chart(str(tmp_path / "none.png"), {"firmware": {}, "baseline": {}})
    assert "no pulse_loss figures" in fig.axes[0].texts[0].get_text()


@pytest.mark.parametrize("name", ["meter_chart", "fleet_chart", "loss_chart"])
def test_no_display_is_needed_and_pyplot_is_never_loaded(name, tmp_path, monkeypatch):
    import subprocess
    import sys
    monkeypatch.delenv("DISPLAY", raising=False)
    code = ("import sys; from lab import charts; from tests.host.test_charts import FLEET, RESULTS;"
            "args = {'meter_chart': ('m', [(0, 1)], [(0, 1, 0)], [(0, 0)], 1000),"
            "'fleet_chart': (FLEET,), 'loss_chart': (RESULTS,)}[%r];"
            "charts.%s(%r, *args); assert 'matplotlib.pyplot' not in sys.modules" % (
                name, name, str(tmp_path / "x.png")))
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, MPLBACKEND="TkAgg"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "x.png").exists()
