# The setup page: one small HTML document, no external assets (the phone has no internet on
# the meter's access point, and the page's Content-Security-Policy forbids loading any), no
# script, readable on a phone. It shows what a technician needs to judge the meter and lets
# them set the Wi-Fi network and password, nothing else.
#
# It never shows a secret: not the Wi-Fi password (the field is always empty), not the token,
# the provisioning secret or the supplier key; the credentials are named by their type only.
# Text from outside (network names from the scan, the last error) is escaped for HTML.

from micropython import const

def esc(text):
    """text for HTML: the five characters that matter, as entities."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def _signal(rssi):
    if rssi >= -55:
        word = "strong"
    elif rssi >= -67:
        word = "good"
    elif rssi >= -77:
        word = "fair"
    else:
        word = "weak"
    return "%s, %d dBm" % (word, rssi)


def _row(label, value, key):
    return '<tr><td>%s</td><td id="%s">%s</td></tr>' % (label, key, esc(value))


def render(m, token, message=None):
    """The page for setup mode m (firmware/setup_mode.py) with a fresh form token, as pieces
    made one at a time while they are sent (a generator): no block of the heap holds more than
    one piece of about 300 bytes, never the page's 3 KB, on a heap setup mode leaves in small
    holes (README: benchmarks, setup mode). The style is written as it is, in literal pieces:
    formatted into the page it was the request's largest block (1.1 KB, and again encoded).
    message: (kind "ok"/"err"/"busy", text) to show above everything, or None."""
    s = m.state
    wifi = m.wifi
    yield ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
           '<meta name="viewport" content="width=device-width,initial-scale=1">')
    if wifi.trying is not None or m.leaving_ms is not None:
        yield '<meta http-equiv="refresh" content="2;url=/">'
    yield "<title>%s setup</title><style>" % esc(m.name)
    yield ("body{font:16px/1.45 system-ui,sans-serif;margin:0 auto;max-width:34em;"
           "padding:0 14px 24px;color:#1d1d1f}h1{font-size:1.35em;margin:.8em 0 .2em}"
           "h2{font-size:1.1em;margin:1.2em 0 .4em}.sub{color:#666;margin:0 0 .8em}"
           "table{border-collapse:collapse;width:100%}")
    yield ("td{padding:6px 0;border-bottom:1px solid #e3e3e3;vertical-align:top}"
           "td:first-child{color:#666;width:42%}.msg{padding:10px 12px;border-radius:8px;"
           "margin:12px 0}.ok{background:#e4f4e8}.err{background:#fde8e6}"
           ".busy{background:#fff4d6}label{display:block;margin:10px 0 4px}")
    yield (".net{display:flex;justify-content:space-between;align-items:center;"
           "padding:11px 12px;border:1px solid #ccc;border-radius:8px;margin:6px 0}"
           ".net input{margin-right:10px}.sig{color:#555;white-space:nowrap;font-size:.9em}")
    yield ("input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:11px;"
           "font-size:16px;border:1px solid #bbb;border-radius:8px}button{width:100%;"
           "padding:13px;font-size:17px;margin:14px 0 6px;border:0;border-radius:8px;"
           "background:#0b63ce;color:#fff}small{color:#666}</style></head><body>")
    yield ('<h1 id="device">%s</h1><p class="sub">Meter setup &middot; access point %s</p>'
           % (esc(m.name), esc(m.ssid)))
    if message is None:
        message = _status(m)
    if message is not None:
        yield '<div class="msg %s" id="message">%s</div>' % (message[0], esc(message[1]))
    yield "<table>"
    yield _row("Firmware", s["version"], "version")
    yield _row("Provisioned", s["provisioned"], "provisioned")
    yield _row("Attributes sent", s["attributes"], "attributes")
    yield _row("Pulse index", "%d" % m.pipeline.pulses.index, "pulses")
    yield _row("Energy", m.energy_text() + " kWh", "energy")
    yield _row("Wi-Fi", m.wifi_text(), "wifi")
    yield _row("Last error", s["last_error"] or "none", "last-error")
    yield _row("Setup opened", m.why, "why")
    yield "</table>"
    if m.leaving_ms is None:
        yield from _form(m, token)
    yield ("<p><small>This access point closes after %d min without use, or once the "
           "meter has joined its network.</small></p></body></html>" % (m.timeout_ms // 60000))


def _status(m):
    wifi = m.wifi
    if m.leaving_ms is not None:
        return ("ok", "Joined %s. The new settings are saved; the meter now leaves setup and "
                      "starts reporting. This access point closes in a few seconds."
                % wifi.result[1])
    if wifi.trying is not None and m.user_join:
        return ("busy", "Joining %s ..." % wifi.trying)
    r = wifi.result
    if r is not None and not r[0] and m.user_join:
        return ("err", "Could not join %s: %s. The old settings are kept." % (r[1], r[2]))
    return None


def _form(m, token):
    tried = m.wifi.result[1] if m.wifi.result is not None else m.configured
    yield ('<h2>Wi-Fi network</h2><form method="post" action="/wifi" autocomplete="off">'
           '<input type="hidden" name="token" value="%s">' % token)
    if not m.networks:
        yield "<p><small>No networks found.</small></p>"
    for ssid, rssi, secured in m.networks:
        yield ('<label class="net"><span><input type="radio" name="ssid" value="%s"%s>%s'
               '%s</span><span class="sig">%s</span></label>'
               % (esc(ssid), " checked" if ssid == tried else "", esc(ssid),
                  "" if secured else " (open)", _signal(rssi)))
    yield ('<p><small><a href="/?scan=1">Scan again</a></small></p>'
           '<label for="other">Other network (hidden, or not listed)</label>'
           '<input type="text" id="other" name="other" maxlength="32">')
    yield ('<label for="password">Password</label>'
           '<input type="password" id="password" name="password" maxlength="63">'
           '<button type="submit">Join</button></form>')
