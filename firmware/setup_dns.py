# The captive-portal DNS answer of setup mode: every name a phone asks for resolves to the
# meter's access point, so its connectivity check (connectivitycheck.gstatic.com,
# captive.apple.com, www.msftconnecttest.com, detectportal.firefox.com) reaches the meter's
# page server, gets a redirect instead of the answer it expects, and the phone opens the setup
# page by itself (docs/esp32.md: access point). The access point's DHCP server names the
# access point itself as the DNS server.
#
# Everything that arrives is hostile: a reply is built only for one well-formed standard query
# (RFC 1035 §4.1: a header, one question of at most 255 bytes in uncompressed labels of at
# most 63), in a buffer allocated once; anything else is dropped and counted. A query for
# another type than A (AAAA, HTTPS) gets an empty answer, so the phone falls back to A.

from micropython import const

_MAX_QUERY = const(512)  # a DNS message over UDP (RFC 1035 §4.2.1)
_PER_POLL = const(8)  # queries answered per main-loop step, so a flood cannot starve it


def reply(query, ip4, out):
    """Write the answer to `query` (bytes) into `out` (a bytearray of _MAX_QUERY bytes):
    its length, or 0 when the query is not one to answer. ip4: the 4 address bytes."""
    n = len(query)
    if n < 17 or n > _MAX_QUERY:  # header 12 + the root name 1 + type 2 + class 2
        return 0
    # QR 0 (a query), opcode 0 (standard), no truncation; one question, no answers, no
    # authority records (an EDNS OPT record in the additional section is allowed, ignored).
    if query[2] & 0xFA or query[4] or query[5] != 1 or query[6] | query[7] | query[8] | query[9]:
        return 0
    i = 12
    while True:
        label = query[i]
        if label == 0:
            i += 1
            break
        if label > 63:  # a compression pointer (0xC0) or a reserved label type
            return 0
        i += label + 1
        if i - 12 > 255 or i >= n:
            return 0
    if i + 4 > n or query[i + 2] != 0 or query[i + 3] != 1:  # class IN
        return 0
    answer = query[i] == 0 and query[i + 1] == 1  # type A
    end = i + 4
    out[0] = query[0]  # the query's id
    out[1] = query[1]
    out[2] = 0x84 | (query[2] & 1)  # a response, authoritative, recursion desired as asked
    out[3] = 0x80  # recursion available, no error
    out[4] = 0
    out[5] = 1
    out[6] = 0
    out[7] = 1 if answer else 0
    for k in range(8, 12):
        out[k] = 0
    out[12:end] = memoryview(query)[12:end]  # the question, as asked
    if not answer:
        return end
    # A pointer to the name at offset 12, type A, class IN, a TTL of 10 s (short: once setup
    # ends, the phone asks its real DNS again), 4 bytes of address.
    out[end:end + 12] = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x0a\x00\x04"
    out[end + 12:end + 16] = ip4
    return end + 16


class Dns:
    def __init__(self, socket_mod, ip, port, log):
        s = socket_mod.socket(socket_mod.AF_INET, socket_mod.SOCK_DGRAM)
        s.bind(socket_mod.getaddrinfo(ip, port)[0][-1])
        s.setblocking(False)
        self._s = s
        self._ip4 = bytes([int(p) for p in ip.split(".")])
        self._out = bytearray(_MAX_QUERY)
        self._log = log
        self.answered = 0
        self.dropped = 0

    def serve(self):
        """Answer what has arrived, at most _PER_POLL queries; never blocks."""
        s = self._s
        for _ in range(_PER_POLL):
            try:
                # recvfrom allocates the bytes and the address: ESP32 sockets have no
                # recvfrom_into (docs/esp32.md: access point).
                query, addr = s.recvfrom(_MAX_QUERY)
            except OSError:
                return  # nothing waiting (EAGAIN)
            n = reply(query, self._ip4, self._out)
            if not n:
                self.dropped += 1
                if self.dropped == 1:
                    self._log.warn("setup", "dns: a malformed query dropped (counted from now)")
                continue
            try:
                s.sendto(memoryview(self._out)[:n], addr)
                self.answered += 1
            except OSError:
                self.dropped += 1

    def close(self):
        try:
            self._s.close()
        except OSError:
            pass
