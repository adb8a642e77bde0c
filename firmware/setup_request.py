# The supervisor's hand-over to setup mode (firmware/setup_mode.py): Wi-Fi failing for
# setup_after_s, the BOOT button's press judged by its length, and the request itself. Loaded
# only after a failed join or while the button is down, and unloaded again: normal operation
# keeps none of this in its heap.
#
# The BOOT button (README: the technician's guide):
#   held 3 s and let go before 10 s: re-provision (on release; the LED flickers from 3 s on)
#   held 10 s: setup mode (at the 10 s mark: the meter resets into it)
# One press has one length, so the two requests cannot be confused, and a press held for setup
# never re-provisions on its way there. Polled from the main loop: a press never blocks it,
# and a button stuck down fires once.
#
# What this module decides goes back to the supervisor as return values (the press's state;
# since when joins have failed): the supervisor keeps its own fields (_held, _wifi_failing),
# and this module writes none of them (tests/unit/test_ownership.py).

from micropython import const

_RECORD = const("setup_request")  # read at boot by firmware/startup.py setup_reason()
_REPROVISION_MS = const(3000)
_SETUP_MS = const(10000)


def step(sup, now):
    """One main-loop step while the button is down, or just let go. Returns the press's state
    for the supervisor to keep (its _held, read here next step): ticks_ms when the press began,
    None when up, False once this press has fired."""
    hal = sup.hal
    held = sup._held
    if not hal.boot_button_held(sup.cfg["boot_button_pin"]):
        if held is not None and held is not False and \
                hal.ticks_diff(now, held) >= _REPROVISION_MS:
            sup.request_reprovision("BOOT button")
        from firmware import unload
        unload("setup_request")  # the press is over: out of the heap until the next one
        return None
    if held is None:
        return now
    if held is not False:
        if hal.ticks_diff(now, held) >= _SETUP_MS:
            if not open(sup, "BOOT button held 10 s"):
                sup._goto(sup.state, hal.ticks_diff(sup._next_ms, now))  # the LED as it was
            return False
        if hal.ticks_diff(now, held) >= _REPROVISION_MS:
            sup._show("gesture")  # let go now to re-provision; hold on for setup
    return held


def fail(sup, now, status):  # (a name normal operation has interned anyway)
    """After a failed join: setup mode, once joins have failed for setup_after_s. Returns when
    they began failing, for the supervisor to keep (its _wifi_failing): None once setup mode
    was asked for, so that a refusal (no setup_password) asks again as late."""
    since = sup._wifi_failing
    after_ms = sup.cfg["setup_after_s"] * 1000
    if after_ms and sup.hal.ticks_diff(now, since) >= after_ms:
        since = None
        open(sup, "could not join %s for %d s: %s" % (sup.cfg["wifi_ssid"], after_ms // 1000,
                                                      status))
    from firmware import unload
    unload("setup_request")
    return since


def open(sup, why):  # noqa: A001  (the name costs no interned name: the builtin's)
    """Reset into setup mode (the next boot opens the access point), unless the meter is
    connected and reporting, or has no setup_password. False when refused. Logged as "wifi":
    a tag of its own would be one more interned name in normal operation."""
    if sup.state == "run":
        sup.log.warn("wifi", "setup mode not opened (%s): the meter is connected and reporting",
                     why)
        return False
    if not sup.cfg["setup_password"]:
        sup.log.warn("wifi", "setup mode not opened (%s): config.json has no setup_password", why)
        return False
    sup.store.write(_RECORD, {"why": why})
    sup.log.warn("wifi", "%s: resetting into setup mode", why)
    sup.shutdown()
    sup.hal.reset()
    return True
