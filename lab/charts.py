"""The pictures of `make sim`, `make fleet` and `make bench`, drawn with matplotlib.

Pure functions of the figures those tools already compute (the same dicts they write as JSON),
so they are tested on canned data (tests/host/test_charts.py). Each writes one PNG and returns
the matplotlib Figure it drew, for the tests to read back. Figures are built with
matplotlib.figure.Figure, which renders through Agg without pyplot: no display, no GUI backend,
no global state shared between threads. matplotlib is imported only here and only when a chart
is drawn; nothing of it goes onto a meter (requirements-sim.txt, tools/build_device.py takes
main.py, boot.py, firmware/ and lib/umqtt only).
"""

import os

_DPI = 100
# A palette that stays apart for colour-blind readers (Okabe and Ito).
_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def _figure(width, height):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _save(fig, path):
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    # Written beside, then renamed: a reader (a browser on the docs, a test) never sees half a file.
    tmp = path + ".tmp"
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return fig


def _hours_axis(ax):
    """Ticks as a clock (HH:MM) on an axis counted in hours since midnight of day 1."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 3, 4, 6, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda h, _pos: "%02d:%02d" % (int(h // 1) % 24, int(round(h % 1 * 60)) % 60)))


def meter_chart(path, title, truth, readings, played, per_kwh, clock_hours=False):
    """make sim, one meter: the true load against the power the server received, and the energy
    the server holds against the pulses played.

    truth: [(x, W)], the load played into the pulse input; readings: [(x, power_w,
    energy_kwh)], as the server stored them, x at each reading's timestamp; played: [(x,
    pulses)], edges played so far. x is hours of the simulated day (clock_hours: ticks shown
    as HH:MM) or seconds of the run."""
    fig = _figure(9, 6.2)
    top, bottom = fig.subplots(2, 1, sharex=True)
    fig.suptitle(title)
    if truth:
        top.plot([x for x, _ in truth], [w for _, w in truth], color=_COLOURS[1], lw=1.0,
                 label="true load (played into the pulse input)")
    if readings:
        top.plot([r[0] for r in readings], [r[1] for r in readings], color=_COLOURS[0], lw=1.2,
                 marker="o", ms=3, label="power_w at the server (a dot per reading)")
    top.set_ylabel("power (W)")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize="small")
    if played:
        bottom.plot([x for x, _ in played], [p / float(per_kwh) for _, p in played],
                    color=_COLOURS[1], lw=1.0, label="pulses played / %d imp/kWh" % per_kwh)
    if readings:
        bottom.step([r[0] for r in readings], [r[2] for r in readings], where="post",
                    color=_COLOURS[0], lw=1.4, marker="o", ms=3,
                    label="energy_kwh at the server (held until the next reading)")
    bottom.set_ylabel("energy (kWh)")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    bottom.legend(loc="upper left", fontsize="small")
    if clock_hours:
        _hours_axis(bottom)
        bottom.set_xlabel("simulated time of day")
    else:
        bottom.set_xlabel("seconds since the loads started")
    return _save(fig, path)


def fleet_chart(path, report):
    """make fleet: CONNECTs per second after the server came back, and when each meter
    published again (sorted), against the backoff's bound. report: bench.fleet's report."""
    fig = _figure(9, 6.2)
    top, bottom = fig.subplots(2, 1)
    fig.suptitle("%d meters, server away %.0f s (backoff %d..%d s, equal jitter)" % (
        report["meters"], report["outage_s"], report["backoff"]["retry_min_s"],
        report["backoff"]["retry_max_s"]))
    bins = report["reconnect"]["per_second"]
    top.bar(range(len(bins)), bins, width=1.0, align="edge", color=_COLOURS[0],
            label="CONNECT packets in that second")
    model = report.get("model") or {}
    if model.get("peak_p50") is not None:
        top.axhline(model["peak_p50"], color=_COLOURS[1], ls="--", lw=1.2,
                    label="peak the backoff predicts (median of %d fleets)" % model.get("trials", 0))
    # Both panels on one time axis, the bound included; room above the bars for the legend.
    right = max([len(bins), report["backoff_bound_s"]] +
                [m["back_after_s"] for m in report["per_meter"] if m.get("back_after_s")]) * 1.04
    top.set_xlim(0, right)
    top.set_ylim(0, max(bins + [model.get("peak_p50") or 0, 1]) * 1.3)
    top.set_xlabel("seconds after the restart")
    top.set_ylabel("CONNECT/s")
    top.grid(alpha=0.3, axis="y")
    top.legend(loc="upper left", fontsize="small")
    back = sorted(m["back_after_s"] for m in report["per_meter"] if m.get("back_after_s") is not None)
    bottom.step(back, range(1, len(back) + 1), where="post", color=_COLOURS[0], lw=1.4,
                label="meters publishing again")
    bottom.axvline(report["backoff_bound_s"], color=_COLOURS[1], ls="--", lw=1.2,
                   label="backoff bound (%.0f s)" % report["backoff_bound_s"])
    missing = len(report["per_meter"]) - len(back)
    bottom.set_xlabel("seconds after the restart" + (" (%d never back)" % missing if missing else ""))
    bottom.set_ylabel("meters")
    bottom.set_xlim(0, right)
    bottom.set_ylim(0, report["meters"] * 1.05)
    bottom.grid(alpha=0.3)
    bottom.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def _as_number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _ordered(keys):
    """Numbers in numeric order first (rates, stall seconds), then any other label as found."""
    keys = list(dict.fromkeys(keys))
    numeric = sorted((k for k in keys if _as_number(k) is not None), key=_as_number)
    return numeric + [k for k in keys if _as_number(k) is None]


def loss_panels(results):
    """The pulse-loss table as panels: [(title, rates, columns, {(rate, column): loss})], one per
    measured path of each kind, whatever paths and columns (stall seconds, or any other label a
    run adds) the results hold."""
    panels = []
    for kind in ("firmware", "baseline"):
        for path, table in sorted(((results.get(kind) or {}).get("pulse_loss") or {}).items()):
            if not isinstance(table, dict) or not table:
                continue
            cells = {(rate, col): v for rate, row in table.items() if isinstance(row, dict)
                     for col, v in row.items()}
            panels.append(("%s, %s" % (kind, path.replace("_", "-")),
                           _ordered(r for r, _ in cells), _ordered(c for _, c in cells), cells))
    return panels


def loss_chart(path, results, column_label="stall %s s"):
    """make bench: pulses lost, by rate, one bar per column of the table (main-loop stall and
    any other column), one panel per path. Panels share the y axis so they compare at a glance.
    column_label names a numeric column (a stall in seconds); any other column is named as is."""
    panels = loss_panels(results)
    fig = _figure(9, 2.0 + 2.4 * max(1, len(panels)))
    axes = fig.subplots(max(1, len(panels)), 1, sharey=True, squeeze=False)[:, 0]
    fig.suptitle("pulse_loss: edges played - pulse index at the server")
    top = max([v for _t, _r, _c, cells in panels for v in cells.values()] + [1])
    for ax, (title, rates, columns, cells) in zip(axes, panels):
        width = 0.8 / max(1, len(columns))
        for j, col in enumerate(columns):
            xs = [i + (j - (len(columns) - 1) / 2.0) * width for i in range(len(rates))]
            ys = [cells.get((r, col)) for r in rates]
            bars = ax.bar([x for x, y in zip(xs, ys) if y is not None],
                          [y for y in ys if y is not None], width=width,
                          color=_COLOURS[j % len(_COLOURS)],
                          label=column_label % col if _as_number(col) is not None else str(col))
            ax.bar_label(bars, fontsize="x-small", padding=1)
        ax.set_title(title, fontsize="medium", loc="left")
        ax.set_xticks(range(len(rates)), ["%s/s" % r for r in rates])
        ax.set_ylabel("pulses lost")
        ax.set_ylim(0, top * 1.2)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(loc="upper left", fontsize="small", ncol=max(1, len(columns)))
    axes[-1].set_xlabel("pulse rate")
    if not panels:
        axes[0].text(0.5, 0.5, "no pulse_loss figures in these results", ha="center",
                     transform=axes[0].transAxes)
    return _save(fig, path)
