"""The host side of the project, on CPython: the charts, make sim's live view, the set-up check."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
