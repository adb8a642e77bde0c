# Reads provisioning replies (one hex-encoded payload a line) from the file named first, and
# prints firmware.provision.parse_reply's verdict for each: the outcome and the detail.
# tests/unix/test_provision_on_unix_port.py compares them with CPython's.

import sys
from binascii import unhexlify

from firmware.provision import parse_reply

with open(sys.argv[1]) as f:
    for line in f:
        outcome, creds, detail = parse_reply(unhexlify(line.strip()))
        print("%s|%s" % (outcome, detail))
