# The meter firmware package. Modules define things and do nothing at import time;
# firmware/entry.py (which main.py runs) builds the objects. Boot-only modules are unloaded
# after use (see unload()).


def unload(*names):
    """Drop modules that are needed only at boot (or only while provisioning) so their code
    and constants return to the heap: on a board that loads .mpy files from flash they cost
    about twice their file size in RAM."""
    import sys
    pkg = sys.modules.get("firmware")
    for name in names:
        # "firmware.%s", not "firmware." + name: a string literal of up to 10 characters is
        # interned for good (main.py), a longer one is not.
        sys.modules.pop("firmware.%s" % name, None)
        if pkg is not None and name in pkg.__dict__:
            del pkg.__dict__[name]
