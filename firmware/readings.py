# Readings waiting to be sent: a ring preallocated in RAM, oldest first.
# A reading is (ts_ms, pulse_index, power_dw); see firmware/telemetry.py.

from array import array


class ReadingQueue:
    def __init__(self, capacity):
        # Preallocated, so pushing allocates nothing. Epoch milliseconds need 41 bits: 'q'
        # holds them on every port, but MicroPython reads a 'q' item back as a big int whatever
        # its value (py/objint_mpz.c, mp_obj_new_int_from_ll): 64 bytes of garbage per field
        # and reading on the 64-bit port, and more for each sum made with it. Where a C long
        # has 64 bits (the Unix port) 'l' holds them and reads back as a small int; on the
        # ESP32 (32-bit long) 'q' stays, and a timestamp is a big int there anyway (> 2**30).
        wide = "l" if len(bytes(array("l", [0]))) == 8 else "q"
        self._ts = array(wide, [0] * capacity)
        self._index = array(wide, [0] * capacity)
        self._power = array("l", [0] * capacity)
        self._cap = capacity
        self._head = 0  # oldest
        self._len = 0
        self.dropped = 0

    def __len__(self):
        return self._len

    def push(self, ts, index, power_dw):
        if self._len == self._cap:
            # Full: the oldest reading goes. Its energy is not lost: every later reading
            # carries the cumulative index.
            self._head = (self._head + 1) % self._cap
            self._len -= 1
            self.dropped += 1
        i = (self._head + self._len) % self._cap
        self._ts[i] = ts
        self._index[i] = index
        self._power[i] = power_dw
        self._len += 1

    def peek(self, n):
        out = []
        for k in range(min(n, self._len)):
            i = (self._head + k) % self._cap
            out.append((self._ts[i], self._index[i], self._power[i]))
        return out

    def drop(self, n):
        n = min(n, self._len)
        self._head = (self._head + n) % self._cap
        self._len -= n
