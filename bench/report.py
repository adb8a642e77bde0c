"""results.json and the printed table: every figure beside the baseline's, goals judged."""

import json
import math

LIMITS = {"tb_cloud_telemetry_messages_per_hour": 7000, "tb_cloud_data_points_per_hour": 15000}

# (key, how the firmware's figure must compare, target)
GOALS = (("min_heapsize_bytes", "<=", 65536), ("alloc_per_publish_bytes", "<=", 512),
         ("isr_alloc_bytes", "==", 0), ("pulse_loss_hw_counter_max", "==", 0),
         ("pulse_loss_bounce_hw_counter_worst", "==", 0),
         ("power_error_pct.after_step", "<=", 1.0), ("energy_mismatch_readings", "==", 0),
         ("messages_per_hour", "<=", LIMITS["tb_cloud_telemetry_messages_per_hour"]),
         ("data_points_per_hour", "<=", LIMITS["tb_cloud_data_points_per_hour"]))

ROWS = (
    ("heap_after_boot_bytes", "live heap after boot"),
    ("heap_steady_bytes", "live heap while running"),
    ("heap_peak_bytes", "live heap peak, provisioning and connect"),
    ("min_heapsize_bytes", "smallest -X heapsize for boot..1 h telemetry"),
    ("alloc_per_publish_bytes", "allocated by one publishing step (median)"),
    ("alloc_per_publish_max_bytes", "  the same, largest"),
    ("alloc_per_cycle_bytes", "allocated per 2 s publish cycle, 1 pulse/s"),
    ("isr_alloc_bytes", "allocated by 10000 interrupt handler calls"),
    ("pulse_loss_hw_counter_max", "pulse_loss, hardware counter, worst case"),
    ("pulse_loss_interrupt_only_max", "pulse_loss, interrupt only, worst case"),
    ("pulse_loss_bounce_hw_counter_worst", "pulse_loss with bounce, hardware counter, worst"),
    ("pulse_loss_bounce_interrupt_only_worst", "pulse_loss with bounce, interrupt only, worst"),
    ("energy_mismatch_readings", "readings whose energy_kwh != pulses / C"),
    ("power_error_pct.steady", "power error % at constant load, largest"),
    ("power_error_pct.steady_mean", "  the same, mean"),
    ("power_error_pct.after_step", "power error % 2 pulses after a step"),
    ("power_input_jitter_pct", "  control: played edge gaps off by, largest %"),
    ("zero_power_delay_s", "load off -> 0 W reported (default settings)"),
    ("power_below_10pct_delay_s", "load off -> <10 % reported (default settings)"),
    ("boot_to_telemetry_ms", "provisioned boot -> first PUBACKed telemetry"),
    ("boot_to_connect_ms", "  provisioned boot -> device session accepted"),
    ("first_boot_ms", "blank boot -> provisioned, attributes, telemetry"),
    ("first_boot_to_connect_ms", "  blank boot -> provisioned, device session"),
    ("wire_bytes_per_point.plain_single", "wire bytes per reading, plain, 1 per message"),
    ("wire_bytes_per_point.tls_single", "wire bytes per reading, TLS, 1 per message"),
    ("wire_bytes_per_point.plain_batched", "wire bytes per reading, plain, batched"),
    ("wire_bytes_per_point.tls_batched", "wire bytes per reading, TLS, batched"),
    ("batch_points", "  readings in that batch"),
    ("messages_per_hour", "telemetry messages per hour (defaults)"),
    ("data_points_per_hour", "telemetry data points per hour (defaults)"),
    ("flash_writes_per_hour", "flash file writes per hour (defaults)"),
    ("flash_programs_per_hour", "  flash block programs per hour"),
    ("flash_erases_per_hour", "  flash block erases per hour"),
    ("flash_erases_per_1000_writes", "  flash block erases per 1000 file writes"),
    ("ota_download_s_per_100kb", "OTA download time per 100 KB (readings meanwhile)"),
    ("ota_wire_bytes_per_100kb", "  wire bytes per 100 KB of package, readings included"),
    ("ota_heap_free_min_bytes", "  lowest free heap during it, 117 KB heap"),
    ("ota_package_bytes", "  the package downloaded"),
    ("max_pulses_lost_on_power_cut", "max pulses lost on a power cut, 1 pulse/s"),
    ("power_cut_lost_pulses", "  lost by the SIGKILL at the worst moment"),
)


def get(d, path):
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def derive(side):
    """Worst case over the pulse-loss matrices, per path: the largest loss; with bounce, the
    largest either way (a negative loss is bounce counted as pulses)."""
    for path, table in (side.get("pulse_loss") or {}).items():
        values = [v for by_stall in table.values() for v in by_stall.values()]
        if values:
            side["pulse_loss_%s_max" % path] = max(values)
    for path, table in (side.get("pulse_loss_bounce") or {}).items():
        values = [v for by_stall in table.values() for v in by_stall.values()]
        if values:
            side["pulse_loss_bounce_%s_worst" % path] = max(values, key=abs)


def judge(results):
    goals = {}
    for key, op, target in GOALS:
        v = get(results["firmware"], key)
        if v is None:
            continue
        met = v <= target if op == "<=" else v == target
        goals[key] = {"target": target, "firmware": v, "met": int(met)}
    return goals


def _fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "%.2f" % v
    return "%d" % v


def table(results):
    goals = results["goals"]
    lines = ["%-47s %12s %12s  %s" % ("figure", "firmware", "baseline", "goal")]
    for key, label in ROWS:
        fw, bl = get(results["firmware"], key), get(results["baseline"], key)
        if fw is None and bl is None:
            continue
        g = goals.get(key)
        verdict = ""
        if g:
            verdict = "%s %s: %s" % ([o for k, o, _ in GOALS if k == key][0], _fmt(g["target"]),
                                     "met" if g["met"] else "NOT MET")
        lines.append("%-47s %12s %12s  %s" % (label, _fmt(fw), _fmt(bl), verdict))
    lines += ["", "pulse_loss (real pulses played - pulse index on the server), by rate and stall:"]
    lines += _loss_matrix(results, "pulse_loss")
    lines += ["", "pulse_loss_bounce (the same, each pulse bouncing twice 0.5-5 ms after it;",
              "negative: bounce counted as pulses):"]
    lines += _loss_matrix(results, "pulse_loss_bounce")
    return "\n".join(lines)


def _loss_matrix(results, key):
    loss = [("firmware", "hw_counter"), ("firmware", "interrupt_only"), ("baseline", "interrupt_only")]
    stalls = sorted({s for kind, path in loss
                     for t in (get(results[kind], "%s.%s" % (key, path)) or {}).values()
                     for s in t}, key=float)
    head = "%-10s" % "pulses/s"
    for kind, path in loss:
        head += " | %-24s" % ("%s %s" % (kind, path.replace("_", "-")))
    lines = [head, "%-10s" % "stall s" + (" | " + " ".join("%7s" % s for s in stalls)) * len(loss)]
    rates = sorted({r for kind, path in loss
                    for r in (get(results[kind], "%s.%s" % (key, path)) or {})}, key=float)
    for r in rates:
        row = "%-10s" % r
        for kind, path in loss:
            t = get(results[kind], "%s.%s.%s" % (key, path, r)) or {}
            row += " | " + " ".join("%7s" % _fmt(t.get(s)) for s in stalls)
        lines.append(row)
    return lines


def check_numeric(results):
    """Every figure is a finite number (meta holds the text)."""
    bad = []

    def walk(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(prefix + "." + k, x)
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            bad.append(prefix)

    for section in ("firmware", "baseline", "limits", "goals"):
        walk(section, results[section])
    return bad


def write(results, path):
    with open(path, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
