# What the clock (firmware/clock.py) does rarely, in RAM only while it does it (Clock.sync and
# Clock.resolve load this module and unload it after each call):
# - ntp(): one SNTP exchange (RFC 4330) and the checks an answer passes before it moves the
#   clock. micropython-lib's ntptime, frozen into the ESP32 image, takes the seconds at bytes
#   40-43 of whatever 48 bytes come back, drops the fraction and sets the RTC (docs/esp32.md:
#   Clock and ticks): a kiss-of-death packet, an unsynchronized server or a stray datagram all
#   set the clock. Here the HAL does the exchange (a UDP socket on the board) with request() and
#   parse(), and ntp() checks the time itself (its date, its step) before it sets the RTC.
# - time_state(): what the supervisor's time state decides after an exchange.
# - resolve(): the readings at the front of the queue with the timestamps they are sent with,
#   when some were taken before the first sync.

from micropython import const

_UNIX_S = const(2208988800)  # 1900-01-01 to 1970-01-01, in seconds
_ERA_S = const(4294967296)  # NTP seconds wrap on 2036-02-07: below 2**31, they are past it
_MIN_MS = const(1735689600000)  # 2025-01-01: no true answer is older than this firmware
_MAX_MS = const(4102444800000)  # 2100-01-01
_RETRY_S = const(300)  # after an exchange that set nothing
_STEP_MS = const(60000)  # a step always believed once synced; plus 1 ms per second since then
_INSIST = const(3)
_BOOT = const(1099511627776)  # 2**40, as in firmware/clock.py
_TRIES = const(3)
_LIVE_MS = const(30000)


def request(ts):
    """A client request carrying `ts` (8 random bytes) as its transmit timestamp. The server
    echoes it as the reply's originate timestamp: a reply without it answers another request,
    or none."""
    pkt = bytearray(48)
    pkt[0] = 0x23  # leap indicator 0, version 4, mode 3 (client)
    pkt[40:48] = ts
    return pkt


def parse(data, ts):
    """Unix ms of the server's transmit timestamp in the reply `data` to the request carrying
    `ts`, or None when the reply is not to be believed (RFC 4330, section 5: what a client
    checks)."""
    if data is None or len(data) < 48:
        return None
    b = data[0]
    if b >> 6 == 3:  # leap indicator 3: the server's own clock is not synchronized
        return None
    if b & 7 != 4 or not 3 <= (b >> 3) & 7 <= 4:  # a server's reply, NTP version 3 or 4
        return None
    if not 1 <= data[1] <= 15:  # stratum 0: kiss-of-death (RATE, DENY); 16: unsynchronized
        return None
    if bytes(data[24:32]) != bytes(ts):
        return None
    secs = data[40] << 24 | data[41] << 16 | data[42] << 8 | data[43]
    if not secs:
        return None  # a server sends 0 when it has no time to give
    if secs < 0x80000000:
        secs += _ERA_S
    frac = data[44] << 24 | data[45] << 16 | data[46] << 8 | data[47]
    return (secs - _UNIX_S) * 1000 + (frac * 1000 >> 32)


def ntp(clock):
    """Clock.sync's body (firmware/clock.py says what is checked and why)."""
    hal, log, host, state = clock._hal, clock._log, clock._host, clock._ntp
    t = hal.ntp_time(host)
    up = clock.uptime_s
    state[0] = up + _RETRY_S
    if t is None:
        return False
    # The date, for the log: H. Hinnant's civil_from_days, integers only.
    days, s = divmod(t // 1000, 86400)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    m = mp + 3 if mp < 10 else mp - 9
    date = "%04d-%02d-%02d %02d:%02d:%02d UTC" % (yoe + era * 400 + (m <= 2), m,
                                                  doy - (153 * mp + 2) // 5 + 1,
                                                  s // 3600, s // 60 % 60, s % 60)
    if t < _MIN_MS or t > _MAX_MS:
        log.warn("time", "%s answered %s: not a date this meter can be at; ignored", host, date)
        return False
    step = t - hal.epoch_ms()
    if clock.synced and abs(step) > _STEP_MS + (up - state[1]):
        state[2] += 1
        if state[2] < _INSIST:
            log.warn("time", "%s would move the clock by %d s; not believed (%d of %d)", host,
                     step // 1000, state[2], _INSIST)
            return False
    state[2] = 0
    hal.epoch_ms(t)  # set the RTC
    state[1] = up
    state[0] = up + state[3]
    if clock.synced:
        log.info("time", "re-synced with %s: clock corrected by %+d ms", host, step)
    else:
        clock._offset = t - clock.uptime_ms()
        clock.last = t  # readings from before the sync are placed before it, those after after
        clock.synced = True
        log.info("time", "synced with %s: %s (the clock was %d s off)", host, date, step // 1000)
    return True


def time_state(clock, tls, tries, host):
    """One try of the supervisor's time state (firmware/supervisor.py). True: go on; False:
    retry after the backoff.

    mbedTLS on the board checks the server certificate's dates against the RTC, which reads
    2000-01-01 after power-up until NTP answers (docs/esp32.md: Clock and ticks): with TLS, a
    connection needs a clock with a date, synced this boot or kept by the RTC through a reset
    (a date from 2025 on). Without TLS, or with a date, the meter goes on after three tries (its
    readings wait for the time) and the clock is synced again from the run state."""
    if ntp(clock):
        return True
    if tries < _TRIES:
        return False
    if tls and not (clock.synced or clock._hal.epoch_ms() >= _MIN_MS):
        clock._log.error("time", "no time from %s (clock not set: TLS cannot check certificates; "
                                 "no connection until NTP answers); retrying", host)
        return False
    clock._log.warn("time", "no time from %s; readings wait for it", host)
    return True


def resolve(clock, queue, n):
    """Clock.resolve's body. A reading that can never be placed in time is dropped (only from
    the front, so the rest stays in order); one sent without a timestamp goes alone (the server
    stamps each message on arrival, and keeps one value per key and timestamp)."""
    out = []
    dropped = 0
    while not out:
        batch = queue.peek(n)
        if not batch:
            break
        for r in batch:
            ts = r[0]
            if ts <= 0:
                boot, up = divmod(-ts, _BOOT)
                up -= 1
                if ts == 0 or boot != clock.boot:
                    ts = None  # an earlier boot's uptime (or from before boot ids)
                elif clock.synced:
                    ts = clock._offset + up
                elif clock.uptime_ms() - up > _LIVE_MS:
                    ts = None
                else:
                    ts = 0
                if ts is None:
                    if out:
                        break
                    queue.drop(1)
                    dropped += 1
                    continue
                if ts == 0 and out:
                    break
            out.append((ts, r[1], r[2]))
            if ts == 0:
                break
    if dropped:
        clock._log.warn("run", "%d readings from before the clock was set dropped: no time "
                              "to give them (later readings carry their energy)", dropped)
    return out
