# Opening a session: what runs only while firmware/link.py's Link connects (DNS, umqtt.simple's
# TCP connect and TLS handshake, the CONNECT/CONNACK exchange). Link.open() loads this module
# for each connect and unloads it after, as it does umqtt.simple: the connect (with the TLS
# handshake) is the heap's high point, and between connects this code need not be resident.
# Every byte still passes through the link's _Net, under its deadline (firmware/link.py says
# how; the CONNACK is checked there, in _Net.read()).
#
# A part of firmware/link.py moved to a file for RAM: open() is the body of Link.open() and
# wrap_socket() is a _Net method (umqtt calls it with the _Net as its socket), so they set up
# the _Net for this connect (net.server, ctx, host and the TLS socket, read by the _Net's
# connect-time code only). The Link's own session state (connected, packet ids, the ping) is
# not touched here: open() returns the CONNACK's code and Link.open() starts the session on 0.
# (tests/unit/test_ownership.py holds every module to that.)

import sys

from micropython import const

from firmware.link import LinkError, describe

_POLLIN = const(1)  # select.POLLIN: the same value on every MicroPython port
_ETIMEDOUT = const(110)


def wrap_socket(net, server_hostname=None):
    # This module is umqtt's TLS layer while it connects (1.3.4: ussl.wrap_socket(sock,
    # **ssl_params) with ssl_params {}; 1.8.0: <ssl object>.wrap_socket(sock,
    # server_hostname=...)); sock is the link's _Net. Either way: the context verified at boot
    # and the configured host name. The handshake blocks inside mbedTLS, every read of it
    # bounded by what is left of the deadline (a stall ends it; see docs/esp32.md).
    left = net.timeout()
    if left <= 0:
        raise OSError(_ETIMEDOUT)
    net._raw.settimeout(left / 1000)
    s = net._s = net.ctx.wrap_socket(net._raw, server_hostname=net.host)
    s.setblocking(False)
    net._poll.register(s, _POLLIN)
    return net


def open(link, host, port, client_id, user, password, keepalive_s, tls):  # noqa: A001
    # Link.open(), with the session closed: 0, or the server's CONNACK refusal code.
    net = link._net
    link.wdt_feed()
    try:
        # DNS before the deadline starts: lwIP's to bound (docs/esp32.md).
        net.server = net._m.getaddrinfo(host, port)
    except Exception as e:
        raise LinkError("connect to %s:%d failed: %s" % (host, port, describe(e)))
    link.wdt_feed()
    net.start(link.timeout_s * 1000)
    net.ctx = tls
    net.host = host
    me = sys.modules[__name__]
    if tls is not None:
        sys.modules["ussl"] = me  # 1.3.4's `import ussl`
    # No username when there is none: 1.3.4 would send an empty one, 1.8.0 none at all.
    um = link._umqtt
    try:
        if um is None:
            # umqtt.simple runs for connect() only: loaded now and unloaded below, so its
            # code is on the heap only while a session opens (on the ESP32 it is frozen
            # into the image and costs no heap either way; on the Unix port, or a board
            # with it in /lib, it costs about 5 KB).
            from umqtt import simple as um
        um.socket = net  # pyright: ignore[reportAttributeAccessIssue]  (its module global: connect() calls socket.socket())
        c = um.MQTTClient(client_id.encode(), host, port,
                          user.encode() if user else None,
                          password.encode() if password else b"", keepalive_s,
                          ssl=me if tls is not None else None)
        c.connect()
    except Exception as e:  # refused, timeout, TLS verification, not a CONNACK, no memory
        net.close()
        if um is not None and isinstance(e, um.MQTTException):
            return e.args[0] if e.args else -1
        raise LinkError("connect to %s:%d failed: %s" % (host, port, describe(e)))
    finally:
        # Nothing keeps this module or umqtt.simple once Link.open() has unloaded them.
        sys.modules.pop("ussl", None)
        if link._umqtt is None:
            sys.modules.pop("umqtt.simple", None)
            sys.modules.pop("umqtt", None)
    return 0  # Link.open() starts the clean session
