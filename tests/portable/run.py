# Runs the portable tests on the MicroPython Unix port (pytest runs the same files on CPython).
#   MICROPYPATH=<repo>:<repo>/tests/portable:.frozen micropython tests/portable/run.py [module ...]
# Prints one line per test and exits with the number of failures.

import os
import sys

MODULES = ("test_cups", "test_config", "test_config_file", "test_store", "test_backoff",
           "test_pulses", "test_clock",
           "test_backlog_pacing", "test_values",
           "test_payloads", "test_gesture_queue_led", "test_provision_reply", "test_setup")


def main(names):
    start = os.getcwd()
    failed = passed = 0
    for name in names or MODULES:
        mod = __import__(name)
        for attr in sorted(dir(mod)):
            if not attr.startswith("test_"):
                continue
            fn = getattr(mod, attr)
            try:
                fn()
                passed += 1
                print("PASS %s.%s" % (name, attr))
            except Exception as e:
                failed += 1
                print("FAIL %s.%s" % (name, attr))
                sys.print_exception(e)
            finally:
                os.chdir(start)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(failed)


main(sys.argv[1:])
