"""A server that dies and comes back (bench/fleet.py): while stopped, nothing listens (a
connection is refused, as from a dead host); restarted, it is on the same port with the same
devices and credentials, whether the same TBSim starts again or a new one loads the state
file the old one saved."""
import socket

import pytest
from rawmqtt import RawClient, publish_packet

from tbsim import Profile, TBSim


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), 2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_stopped_server_refuses_connections_and_restarts_with_its_devices(make_sim):
    sim = make_sim()
    sim.add_device("m", token="tok-m")
    port = sim.mqtt_port
    sim.stop()
    assert refused(port) and refused(sim.http_port)
    assert sim.device("m")["credentials"] == "tok-m"  # readable while stopped
    sim.start()
    assert sim.mqtt_port == port and not refused(port)
    with RawClient(port) as c:
        assert c.connect("cid", "tok-m") == (0x20, b"\x00\x00")
    # One event log across the restart: what happened before it is still there.
    kinds = [e["kind"] for e in sim.events()]
    assert kinds.index("device-created") < kinds.index("connect")


def test_a_new_server_from_the_state_file_takes_over_the_same_port(tmp_path):
    path = str(tmp_path / "state.json")
    first = TBSim(profiles=[Profile("k", "s")], state_file=path).start()
    try:
        first.add_device("m", profile_key="k", token="tok-m")
        port = first.mqtt_port
        with RawClient(port) as c:
            c.connect("cid", "tok-m")
            c.send(publish_packet("v1/devices/me/telemetry", '{"ts":7,"values":{"pulses":3}}',
                                  qos=1))
            c.read_packet()
    finally:
        first.stop()  # saves the state file
    assert refused(port)
    second = TBSim(state_file=path, mqtt_port=port).start()
    try:
        assert second.mqtt_port == port
        with RawClient(port) as c:
            assert c.connect("cid", "tok-m") == (0x20, b"\x00\x00")
        assert second.telemetry("m") == [{"ts": 7, "values": {"pulses": 3}}]
        assert second.device("m")["profileKey"] == "k"
    finally:
        second.stop()


def test_start_twice_is_refused(make_sim):
    sim = make_sim()
    with pytest.raises(RuntimeError):
        sim.start()
