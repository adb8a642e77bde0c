"""The host side of the project, on CPython: the charts, make sim's live view, the set-up check."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(_HERE)))
# The CPython stand-in for `micropython` (const), so that a test can build what the firmware
# sends with the firmware's own code (firmware/provision.py build_request).
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "unit", "shims"))
