# The setup page's web server: microdot (lib/microdot, pinned by hash: tools/fetch_mpy_lib.py)
# behind limits of our own, because whoever reaches the access point's port is hostile until
# checked (README: setup mode; the hostile-HTTP tests in tests/e2e/test_e2e_setup.py).
#
# - Size: microdot reads a request with readline() and readexactly(), and MicroPython's
#   StreamReader.readline() has no limit (a line with no newline would fill the heap before
#   microdot's own length check). So microdot reads from _Bounded, which refuses more than
#   _HEAD bytes of request line and headers, more than _LINES header lines, and a body over
#   _BODY bytes, before reading it.
# - Number and time: at most _CLIENTS connections at once (more are closed unread), each
#   with one deadline for the whole exchange (_DEADLINE_MS), so a slow or silent client holds
#   a slot for seconds, not for ever. microdot answers HTTP/1.0 and closes: one request per
#   connection.
# - Garbage: microdot answers what it cannot parse with 400 and prints the exception; that
#   print is replaced by one log line (counted, at most one every 10 s).
# - The form: a POST needs a token from a page this server served in the last _TOKEN_MS, each
#   token good once (a page on another site, loaded in the phone's browser, cannot read one),
#   a Host header naming the access point (the captive DNS answers every name with the
#   meter's address: a page on evil.example rebound to it would carry Host: evil.example)
#   and, when the browser sends one, an Origin of the access point.
# - Every other host name or path, the phones' connectivity checks among them, gets a
#   redirect to the page: that is what makes the phone open it by itself.

import asyncio
import os
from binascii import hexlify

from microdot import Microdot, Request, Response  # pyright: ignore[reportMissingImports]
from micropython import const

from firmware.setup_page import render

_CLIENTS = const(3)
_HEAD = const(2048)  # request line and headers, bytes
_LINES = const(32)  # header lines
_BODY = const(1024)  # a form is token, network and password: about 300 bytes urlencoded
_DEADLINE_MS = const(10000)
_TOKENS = const(4)  # pages served whose form still counts
_TOKEN_MS = const(1800000)
_QUIET_LOG_MS = const(10000)
_SECURITY = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make the form's Origin "null"
}


class _Bounded:
    # The client's stream as microdot reads it. What arrived and microdot has not read yet is
    # _buf[_at:]: a line is cut out of it, the rest is not copied again for every line (on a
    # browser's 600-byte head, that made a block of the whole head per line), and a chunk joins
    # only the unread rest, so no block is much larger than the 256 bytes of one read.
    def __init__(self, reader):
        self._r = reader
        self._buf = b""
        self._at = 0
        self._got = 0  # bytes read from the client
        self._lines = 0

    async def _more(self, n, limit, what):
        chunk = await self._r.read(n)
        if chunk:
            self._got += len(chunk)
            if self._got > limit:
                raise ValueError("%s over %d bytes" % (what, limit))
            self._buf = self._buf[self._at:] + chunk
            self._at = 0
        return chunk

    def _cut(self, end):
        data = self._buf[self._at:end]
        self._at = end
        return data

    async def readline(self):
        self._lines += 1
        if self._lines > _LINES + 1:
            raise ValueError("more than %d header lines" % _LINES)
        while True:
            i = self._buf.find(b"\n", self._at)
            if i >= 0:
                return self._cut(i + 1)
            if not await self._more(256, _HEAD, "request head"):
                return self._cut(len(self._buf))

    async def readexactly(self, n):
        if n < 0 or n > _BODY:
            raise ValueError("a body of %d bytes" % n)
        while len(self._buf) - self._at < n:
            if not await self._more(n - len(self._buf) + self._at, _HEAD + _BODY, "request"):
                raise EOFError
        return self._cut(self._at + n)

    async def read(self, n=-1):
        if n < 0 or n > _BODY:
            n = _BODY
        if self._at >= len(self._buf):
            await self._more(n, _HEAD + _BODY, "request")
        return self._cut(min(self._at + n, len(self._buf)))


class _Body:
    # A response's body as microdot writes it: an object with __anext__ is written as it is.
    # (Response.body_iter() otherwise makes a class of its own for every response, in the
    # heap; lib/microdot is third-party and pinned, so _Response below asks for this one.)
    def __init__(self, pieces):
        self._pieces = pieces  # an iterator of str, or None: no body

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._pieces is not None:
            for p in self._pieces:
                return p.encode()  # one piece at a time (firmware/setup_page.py)
        raise StopAsyncIteration


class _Response(Response):
    def body_iter(self):
        return _Body(self.body if self.body else None)


def _printable(e):
    # An exception's text for one log line: it may quote what the client sent.
    raw = ("%s: %s" % (type(e).__name__, e)).encode()[:80]
    return bytes([b if 32 <= b < 127 else 63 for b in raw]).decode()


class Portal:
    def __init__(self, mode, log, host):
        self._mode = mode  # firmware/setup_mode.py
        self._log = log
        self.host = host  # what the Host header must say: "192.168.4.1", "127.0.0.1:8080"
        self._tokens = []  # [token, issued ms], newest last
        self.active = 0
        self.requests = 0
        self.refused = 0  # connections over _CLIENTS, forms without a fresh token, wrong hosts
        self.bad = 0  # malformed, oversized or too slow
        self._bad_ms = None
        self._server = None
        Request.max_readline = _HEAD
        Request.max_content_length = _BODY
        Request.max_body_length = _BODY
        import microdot.microdot as md  # pyright: ignore[reportMissingImports]
        md.print_exception = self._bad_request
        app = Microdot()
        app.before_request(self._before)
        app.after_request(self._after)
        app.after_error_request(self._after)
        app.route("/")(self._page)
        app.route("/wifi", methods=["POST"])(self._submit)
        app.route("/favicon.ico")(self._nothing)
        app.errorhandler(404)(self._to_page)
        self._app = app

    async def start(self, ip, port):
        self._server = await asyncio.start_server(self._client, ip, port, _CLIENTS)

    def close(self):
        if self._server is not None:
            self._server.close()

    async def _client(self, reader, writer):
        self.requests += 1
        if self.active >= _CLIENTS:
            self.refused += 1
        else:
            self.active += 1
            try:
                await asyncio.wait_for_ms(self._app.handle_request(_Bounded(reader), writer),
                                          _DEADLINE_MS)
            except asyncio.TimeoutError:
                self._bad_request(OSError("no complete exchange within %d s"
                                          % (_DEADLINE_MS // 1000)))
            except Exception as e:  # a reset connection while answering, and the like
                self._bad_request(e)
            finally:
                self.active -= 1
        try:
            writer.close()
            await writer.wait_closed()
        except Exception:
            pass

    def _bad_request(self, e):
        self.bad += 1
        now = self._mode.hal.ticks_ms()
        if self._bad_ms is None or self._mode.hal.ticks_diff(now, self._bad_ms) >= _QUIET_LOG_MS:
            self._bad_ms = now
            self._log.warn("setup", "bad request (%s); %d so far", _printable(e), self.bad)

    # --- microdot's side ---------------------------------------------------------------------

    def _before(self, req):
        host = req.headers.get("Host")
        if host != self.host and host != self.host + ":80":
            return self._to_page(req)
        self._mode.touch()  # someone is using the page: it stays open
        return None

    def _after(self, req, res):
        for k in _SECURITY:
            res.headers[k] = _SECURITY[k]
        return res

    def _to_page(self, req):
        # Every other host or path: phones' connectivity checks (generate_204,
        # hotspot-detect.html, connecttest.txt, ncsi.txt, success.txt) among them.
        return _Response(status_code=302, headers={"Location": "http://%s/" % self.host})

    def _nothing(self, req):
        return _Response(status_code=204)

    def _html(self, message=None, status=200):
        # The page's pieces, made and encoded one at a time as microdot writes them (a body of
        # unknown length ends when the connection closes: HTTP/1.0).
        return _Response(render(self._mode, self._issue(), message), status,
                         {"Content-Type": "text/html; charset=utf-8"})

    def _page(self, req):
        if "scan" in req.args:
            self._mode.scan()
        return self._html()

    def _submit(self, req):
        origin = req.headers.get("Origin")
        if origin is not None and origin != "http://" + self.host:
            return self._refuse("a form from another site")
        try:
            form = req.form
        except Exception:  # a percent escape that is not one, bytes that are not UTF-8
            form = None
        if form is None:
            return self._refuse("a form that is not one")
        if not self._take(form.get("token")):
            return self._refuse("a form without a fresh token from this page")
        ssid = form.get("other") or form.get("ssid") or ""
        errors = self._mode.submit(ssid, form.get("password") or "")
        if errors:
            return self._html(("err", "Not changed: " + "; ".join(errors)), 400)
        return _Response(status_code=303, headers={"Location": "/"})

    def _refuse(self, why):
        self.refused += 1
        self._log.warn("setup", "refused %s", why)
        return self._html(("err", "Refused: %s. Nothing was changed; use the form on this "
                                  "page." % why), 403)

    # --- form tokens ---------------------------------------------------------------------------

    def _issue(self):
        token = hexlify(os.urandom(16)).decode()
        tokens = self._tokens
        tokens.append([token, self._mode.hal.ticks_ms()])
        if len(tokens) > _TOKENS:
            tokens.pop(0)
        return token

    def _take(self, token):
        if not isinstance(token, str):
            return False
        hal = self._mode.hal
        now = hal.ticks_ms()
        for t in self._tokens:
            if t[0] == token:
                self._tokens.remove(t)
                return hal.ticks_diff(now, t[1]) < _TOKEN_MS
        return False
