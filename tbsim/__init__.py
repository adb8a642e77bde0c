"""tbsim: a ThingsBoard-compatible MQTT device endpoint for tests and local runs (see README.md)."""
from .sim import TBSim
from .store import Profile

__all__ = ["TBSim", "Profile"]
