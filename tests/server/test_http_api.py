"""The loopback HTTP JSON API (administrator actions)."""
import json
import threading
import urllib.error
import urllib.request

import pytest
from rawmqtt import RawClient, parse_publish, publish_packet, subscribe_packet


def call(sim, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{sim.http_port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_create_list_get_delete(sim):
    status, dev = call(sim, "POST", "/api/devices", {"name": "m 1", "credentials": "tok-1"})
    assert status == 201 and dev["credentials"] == "tok-1" and dev["credentialsType"] == "ACCESS_TOKEN"
    status, basic = call(sim, "POST", "/api/devices", {"name": "b1", "credentialsType": "MQTT_BASIC",
                                                       "credentials": {"clientId": "c", "userName": "u", "password": "p"}})
    assert status == 201
    status, devices = call(sim, "GET", "/api/devices")
    assert status == 200 and sorted(d["name"] for d in devices) == ["b1", "m 1"]
    keys = set(devices[0])
    assert {"name", "credentialsType", "credentials", "clientAttributes", "sharedAttributes",
            "latestTelemetry", "telemetryCount"} <= keys
    assert call(sim, "GET", "/api/devices/m%201")[1]["name"] == "m 1"
    assert call(sim, "DELETE", "/api/devices/m%201") == (200, {"deleted": "m 1"})
    assert call(sim, "GET", "/api/devices/m%201")[0] == 404


def test_create_errors(sim):
    sim.add_device("taken", token="tok-taken")
    assert call(sim, "POST", "/api/devices", {"name": "taken"})[0] == 409
    assert call(sim, "POST", "/api/devices", {"name": "new", "credentials": "tok-taken"})[0] == 409
    assert call(sim, "POST", "/api/devices", {"nope": 1})[0] == 400
    assert call(sim, "POST", "/api/devices", {"name": "x", "profileKey": "no-such-profile"})[0] == 400
    status, body = call(sim, "GET", "/api/nothing")
    assert status == 404 and "error" in body


def test_pre_provisioned_device_via_api(make_sim):
    from tbsim import Profile
    sim = make_sim(profiles=[Profile("pk", "ps", strategy="check-pre-provisioned")])
    status, dev = call(sim, "POST", "/api/devices", {"name": "pre", "profileKey": "pk", "credentials": "pre-tok"})
    assert status == 201 and dev["profileKey"] == "pk"
    with RawClient(sim.mqtt_port) as c:
        c.connect("provision")
        c.send(publish_packet("/provision/request",
                              '{"provisionDeviceKey":"pk","provisionDeviceSecret":"ps","deviceName":"pre"}'))
        assert b'"credentialsValue":"pre-tok"' in parse_publish(*c.read_packet())[3]


def test_telemetry_attributes_rpc_and_events(sim):
    sim.add_device("m", token="t")
    c = RawClient(sim.mqtt_port)
    c.connect("cid", "t")
    c.send(subscribe_packet(1, [("v1/devices/me/attributes", 1), ("v1/devices/me/rpc/request/+", 1)]))
    c.read_packet()
    c.send(publish_packet("v1/devices/me/telemetry", '{"ts":1000,"values":{"e":1}}', qos=1))
    c.read_packet()
    assert call(sim, "GET", "/api/devices/m/telemetry") == (200, [{"ts": 1000, "values": {"e": 1}}])

    assert call(sim, "POST", "/api/devices/m/attributes/shared", {"interval": 15}) == (200, {"interval": 15})
    assert parse_publish(*c.read_packet())[3] == b'{"interval":15}'
    assert call(sim, "POST", "/api/devices/m/attributes/shared", [1])[0] == 400

    box = {}
    t = threading.Thread(target=lambda: box.update(r=call(sim, "POST", "/api/devices/m/rpc",
                                                          {"method": "reboot", "params": {"delay": 1}})))
    t.start()
    topic, _, packet_id, payload = parse_publish(*c.read_packet())
    assert payload == b'{"method":"reboot","params":{"delay":1}}'
    c.send(publish_packet(topic.replace("request", "response"), '{"ok":true}'))
    t.join(10)
    assert box["r"] == (200, {"ok": True})
    assert call(sim, "POST", "/api/devices/m/rpc", {"method": "x", "timeoutMs": 200}) == (504, {"error": "timeout"})

    status, page = call(sim, "GET", "/api/events?since=0")
    assert status == 200 and page["next"] == len(page["events"])
    kinds = [e["kind"] for e in page["events"]]
    assert "connect" in kinds and "rpc-response" in kinds
    status, tail = call(sim, "GET", f"/api/events?since={page['next'] - 2}")
    assert len(tail["events"]) == 2 and tail["next"] == page["next"]
    c.close()


def test_malformed_http_is_answered_and_server_survives(sim):
    import socket
    with socket.create_connection(("127.0.0.1", sim.http_port)) as s:
        s.sendall(b"garbage\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    with socket.create_connection(("127.0.0.1", sim.http_port)) as s:
        s.sendall(b"POST /api/devices HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 413")
    assert call(sim, "GET", "/api/devices") == (200, [])
