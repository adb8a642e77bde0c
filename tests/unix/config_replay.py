# The MicroPython half of tests/unix/test_config_differential.py: reads the corpus CPython
# generated (one case a line: "C <hex>" a config file's bytes, "T <hex>" a text's UTF-8) and
# prints, one JSON line per case, what the firmware's own code says about it on this runtime.
#   micropython tests/unix/config_replay.py corpus.txt

import json
import sys
from binascii import unhexlify

from firmware import config
from firmware.cups import cups_error
from firmware.config import escape
from firmware.log import mask


def main(path):
    with open(path) as f:
        for line in f:
            kind, data = line[:1], line[2:].strip()
            data = unhexlify(data)
            if kind == "C":
                warnings = []
                cfg, errors = config.parse(data, warnings)
                shown = sorted(cfg.items()) if cfg is not None and not errors else None
                print(json.dumps([errors, warnings, shown]))
            else:
                text = data.decode()
                print(json.dumps([escape(text), mask(text), cups_error(text)]))


main(sys.argv[1])
