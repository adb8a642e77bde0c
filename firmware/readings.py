# Readings waiting to be sent: a ring preallocated in RAM, oldest first.
# A reading is (ts_ms, pulse_index, power_dw); see firmware/telemetry.py.

from array import array


class ReadingQueue:
    def __init__(self, capacity):
        # 'q': epoch milliseconds need 41 bits; preallocated so pushing allocates nothing.
        self._ts = array("q", [0] * capacity)
        self._index = array("q", [0] * capacity)
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
