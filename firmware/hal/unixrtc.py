# The Unix port's RTC model, loaded by firmware/hal/unix.py only when a test asks for it (the
# board-simulator's own code, never copied to an ESP32: tools/build_device.py UNIX_ONLY).
#
# - The RTC. By default (no model) the Unix HAL's RTC is the host's clock, a board whose RTC
#   kept the time. METER_RTC is a comma-separated list of:
#     2000                 the RTC starts at 2000-01-01 00:00 UTC, as an ESP32's after power-up
#     drift:N              it runs N ppm fast against the host clock (negative: slow)
#     step:AT_MS:DELTA_MS  it jumps by DELTA_MS (signed) once, AT_MS after power-up
#     host                 none of these (the date check below only)
#   e.g. METER_RTC=2000,drift:20000. Setting it (a sync: NTP answers the host's clock, the true
#   time) puts it right; the drift goes on from there.
# - TLS: hal.ssl becomes the ssl module plus the board's date check. This port's mbedTLS checks
#   certificate dates against the host clock, the board's against its RTC (docs/esp32.md: Clock
#   and ticks). So after the real handshake (chain and host name checked by mbedTLS), a
#   connection whose trusted CA is not valid at the RTC's date fails as mbedTLS fails it on the
#   board: ValueError "The certificate validity starts in the future" (or "... has expired").
#   Not modelled: the server certificate's own dates against the RTC (this port's sockets have
#   no getpeercert(); on the board mbedTLS checks every certificate of the chain, the trusted CA
#   included, so a clock before the CA was issued fails on both); with several CAs, which one
#   the chain ends at (one valid at the RTC's date is enough here); and an RTC that keeps the
#   time through a reset (every power-up starts it afresh).

import ssl
import time

from micropython import const

_Y2000_MS = const(946684800000)


def build(hal, spec):
    """The RTC model METER_RTC describes; hal.ssl becomes the TLS that checks dates against
    it."""
    rtc = Rtc(spec)
    hal.ssl = Tls(rtc)
    return rtc


class Rtc:
    def __init__(self, spec):
        host = time.time_ns() // 1000000
        self._base = host  # the RTC read this
        self._host = host  # at this host time
        self._ppm = 0
        self._step_at = None
        self._step = 0
        for item in spec.split(","):
            f = item.split(":")
            if f[0] == "2000":
                self._base = _Y2000_MS
            elif f[0] == "drift":
                self._ppm = int(f[1])
            elif f[0] == "step":
                self._step_at, self._step = host + int(f[1]), int(f[2])
            elif f[0] != "host":
                raise ValueError("METER_RTC: unknown item " + item)

    def epoch_ms(self, ms=None):
        host = time.time_ns() // 1000000
        if ms is not None:
            self._base, self._host = ms, host
            return None
        elapsed = host - self._host
        t = self._base + elapsed + elapsed * self._ppm // 1000000
        if self._step_at is not None and host >= self._step_at:
            t += self._step
            self._base, self._host, self._step_at = t, host, None  # part of the RTC from now on
        return t


class Tls:
    # hal.ssl, and each SSLContext it makes: the real ones, with the date check added after the
    # handshake.
    PROTOCOL_TLS_CLIENT = ssl.PROTOCOL_TLS_CLIENT
    CERT_REQUIRED = ssl.CERT_REQUIRED

    def __init__(self, rtc, ctx=None):
        self._rtc = rtc
        self.ctx = ctx
        self.verify_mode = None
        self._dates = []  # [not before, not after] of each trusted CA, Unix s

    def SSLContext(self, proto):
        return Tls(self._rtc, ssl.SSLContext(proto))

    def load_verify_locations(self, cadata=None):
        self.ctx.load_verify_locations(cadata=cadata)  # refuses what mbedTLS cannot parse
        self._dates.append(_validity(cadata))

    def wrap_socket(self, sock, server_hostname=None):
        ctx = self.ctx
        if self.verify_mode is not None:
            ctx.verify_mode = self.verify_mode
        s = ctx.wrap_socket(sock, server_hostname=server_hostname)
        now = self._rtc.epoch_ms() // 1000
        dates = self._dates
        if not dates:
            return s
        for d in dates:
            if d[0] <= now <= d[1]:
                return s
        s.close()
        # MicroPython's ssl raises mbedTLS's verification text as a ValueError, thus framed.
        raise ValueError("\nThe certificate validity starts in the future\n" if now < dates[0][0]
                         else "\nThe certificate validity has expired\n")


def _validity(data):
    # [not before, not after] of a DER certificate, Unix s: Certificate > tbsCertificate >
    # ([0] version), serialNumber, signature, issuer, validity > UTCTime or GeneralizedTime x 2.
    n = _tlv(data, _tlv(data, 0)[1])[1]
    tag, _s, e = _tlv(data, n)
    if tag == 0xA0:
        n = e
    for _ in range(3):
        n = _tlv(data, n)[2]
    n = _tlv(data, n)[1]
    out = []
    for _ in range(2):
        tag, s, n = _tlv(data, n)
        t = bytes(data[s:n])
        if tag == 0x17:  # YYMMDDhhmmssZ
            y = int(t[:2])
            y += 1900 if y >= 50 else 2000
        else:  # YYYYMMDDhhmmssZ
            y = int(t[:4])
            t = t[2:]
        m, d = int(t[2:4]), int(t[4:6])
        y -= m <= 2  # days from the civil date: H. Hinnant's days_from_civil
        era = y // 400
        yoe = y - era * 400
        doe = yoe * 365 + yoe // 4 - yoe // 100 + (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
        out.append((era * 146097 + doe - 719468) * 86400 + int(t[6:8]) * 3600 +
                   int(t[8:10]) * 60 + int(t[10:12]))
    return out


def _tlv(data, n):
    # (tag, start of the value, end of the value) of the DER element at n
    tag, k = data[n], data[n + 1]
    n += 2
    if k & 0x80:
        m = k & 0x7F
        k = 0
        for _ in range(m):
            k = k << 8 | data[n]
            n += 1
    return tag, n, n + k
