# The crash counter behind main.py's last-chance handler: the pause before a reset grows with
# crashes that come soon after one another, so a crash loop can neither wear the flash nor
# hammer the server. Kept apart from the boot-only code (firmware/startup.py, unloaded after
# boot): main.py needs it while running, and at the moment of a crash, when an import may be
# the one allocation too many.

from micropython import const

_RECORD = const("crash")


def pause_ms(store):
    """Count one more crash; the pause before the reset: 10 s after the first crash, doubling
    up to 10 min while crashes keep coming within the first hour after boot. Best effort: a
    flash that refuses the count (firmware/store.py returns False, never raises) leaves the
    pause where the count on flash puts it."""
    rec = store.read(_RECORD) or {}
    n = rec.get("n", 0) if isinstance(rec.get("n"), int) else 0
    store.write(_RECORD, {"n": n + 1})
    return min(10000 << min(n, 6), 600000)


def forget(store):
    """After an hour of running: the next crash starts from the shortest pause again (best
    effort, as above: a refused remove is tried again by the store)."""
    store.remove(_RECORD)
