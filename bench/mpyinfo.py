"""What a .mpy file holds, and what loading it puts on the heap (bench/heapmap.py).

Reads the .mpy format (version 6, as py/persistentcode.c loads it): the qstr table, the
constant objects, then the tree of raw code (one per function, class body and module body),
each with its bytecode. From the counts, the heap that loading the file takes for code (not
for names or for the objects that running the module body makes) follows from the allocations
py/persistentcode.c makes, each rounded up to whole GC blocks:

    per raw code   the bytecode (m_new, its length), the mp_raw_code_t, the children table
    per module     the qstr table (2 bytes an entry) and the constant table (a word an entry)
    per constant   a str or bytes object: the object and its data (length + 1)

The names are measured, not computed (the qstr pool grows in steps: bench/heapmap.py).
"""

_STR, _BYTES, _INT, _FLOAT, _COMPLEX, _TUPLE = 5, 6, 7, 8, 9, 10


class _Reader:
    def __init__(self, data):
        self.d, self.i = data, 0

    def byte(self):
        b = self.d[self.i]
        self.i += 1
        return b

    def uint(self):
        v = 0
        while True:
            b = self.byte()
            v = (v << 7) | (b & 0x7F)
            if not b & 0x80:
                return v

    def skip(self, n):
        self.i += n


def parse(data):
    """Counts of one .mpy file: qstrs (in the file, not built in), string bytes, constants by
    kind and size, raw codes and their bytecode lengths."""
    r = _Reader(data)
    if r.byte() != ord("M") or r.byte() != 6:
        raise ValueError("not a version 6 .mpy file")
    flags = r.byte()
    r.byte()  # small int bits
    if flags & 0x40:  # arch flags follow (rv32 only)
        r.uint()
    n_qstr, n_obj = r.uint(), r.uint()
    info = {"n_qstr_table": n_qstr, "n_obj": n_obj, "qstrs": [], "objs": [], "code": []}
    for _ in range(n_qstr):
        ln = r.uint()
        if ln & 1:
            continue  # a built-in (static) qstr
        ln >>= 1
        info["qstrs"].append(bytes(data[r.i:r.i + ln]).decode("utf-8", "replace"))
        r.skip(ln + 1)

    def obj():
        t = r.byte()
        if t <= 4:
            return (t, 0)
        ln = r.uint()
        if t == _TUPLE:
            return (t, [obj() for _ in range(ln)])
        v = bytes(data[r.i:r.i + ln])
        r.skip(ln + (1 if t in (_STR, _BYTES) else 0))
        return (t, int(v) if t == _INT else ln)

    for _ in range(n_obj):
        info["objs"].append(obj())

    def raw_code():
        kind_len = r.uint()
        if kind_len & 3:
            raise ValueError("native code in .mpy: not counted")
        n = kind_len >> 3
        r.skip(n)
        children = r.uint() if kind_len & 4 else 0
        info["code"].append((n, children))
        for _ in range(children):
            raw_code()

    raw_code()
    if r.i != len(data):
        raise ValueError("trailing bytes in .mpy (%d of %d read)" % (r.i, len(data)))
    return info


def blocks(n, word=8):
    """Bytes taken by an allocation of n bytes: whole GC blocks of 4 words."""
    block = 4 * word
    return 0 if n <= 0 else -(-n // block) * block


def code_bytes(info, word=8):
    """Heap for the code of a loaded .mpy: bytecode, raw code structs, children tables, the
    module's qstr and constant tables."""
    total = blocks(2 * info["n_qstr_table"], word) + blocks(word * info["n_obj"], word)
    for n, children in info["code"]:
        # mp_raw_code_t: 2 pointers and 4 bytes, plus fun_data_len and n_children where the
        # port saves persistent code (the Unix port does): 3 or 4 words, one block.
        total += blocks(n, word) + blocks(4 * word, word) + blocks(word * children, word)
    return total


def const_bytes(info, word=8):
    """Heap for the constant objects: str/bytes (object of 4 words + data), floats (boxed),
    big ints (an mpz), tuples (2 words + a word an item)."""
    def one(o):
        t, v = o
        if t in (_STR, _BYTES):
            return blocks(4 * word, word) + blocks(v + 1, word) if v else 0
        if t in (_FLOAT, _COMPLEX):
            return blocks(2 * word + 8, word)
        if t == _INT:  # stored here only when too big for the compiler's small int
            if abs(v) < 1 << (8 * word - 2):
                return 0  # fits this port's small int: no object
            return blocks(4 * word, word) + blocks(len(str(abs(v))) // 2 + word, word)
        if t == _TUPLE:
            return blocks(word * (2 + len(v)), word) + sum(one(x) for x in v)
        return 0
    return sum(one(o) for o in info["objs"])
