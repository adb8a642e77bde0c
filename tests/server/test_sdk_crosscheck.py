"""Cross-check with ThingsBoard's official Python SDK (tb-mqtt-client): its device client speaks MQTT 5."""
import threading

import pytest
from tb_device_mqtt import TBDeviceMqttClient

from tbsim import Profile

# The SDK itself builds its provisioning client on paho's deprecated callback API.
pytestmark = pytest.mark.filterwarnings("ignore:Callback API version 1 is deprecated")


@pytest.fixture
def tb_sim(make_sim):
    return make_sim(profiles=[Profile("sdk-key", "sdk-secret")])


def test_sdk_provisioning_statuses(tb_sim):
    port = tb_sim.mqtt_port
    creds = TBDeviceMqttClient.provision("127.0.0.1", "sdk-key", "sdk-secret", port=port, device_name="sdk-1")
    assert creds["status"] == "SUCCESS" and creds["credentialsType"] == "ACCESS_TOKEN"
    assert creds["credentialsValue"] == tb_sim.device("sdk-1")["credentials"]
    # Name exists -> FAILURE; the SDK returns None for any non-SUCCESS status.
    assert TBDeviceMqttClient.provision("127.0.0.1", "sdk-key", "sdk-secret", port=port, device_name="sdk-1") is None
    assert [e["status"] for e in tb_sim.events("provision")] == ["SUCCESS", "FAILURE"]


def test_sdk_device_supplied_credentials(tb_sim):
    port = tb_sim.mqtt_port
    creds = TBDeviceMqttClient.provision("127.0.0.1", "sdk-key", "sdk-secret", port=port, device_name="sdk-2",
                                         client_id="sdk-cid", username="sdk-user", password="sdk-pw")
    assert creds["credentialsType"] == "MQTT_BASIC"
    assert creds["credentialsValue"] == {"clientId": "sdk-cid", "userName": "sdk-user", "password": "sdk-pw"}
    # Wrong secret -> NOT_FOUND -> None.
    assert TBDeviceMqttClient.provision("127.0.0.1", "sdk-key", "wrong", port=port, device_name="sdk-3") is None
    assert tb_sim.events("provision")[-1]["status"] == "NOT_FOUND"

    client = TBDeviceMqttClient("127.0.0.1", port=port, username="sdk-user", password="sdk-pw", client_id="sdk-cid")
    client.connect()
    try:
        assert tb_sim.wait_for(client.is_connected, 5)
        assert client.send_telemetry({"basic": 1}).get() == 0
        assert tb_sim.telemetry("sdk-2")[-1]["values"] == {"basic": 1}
    finally:
        client.disconnect()


def test_sdk_telemetry_attributes_and_rpc(tb_sim):
    creds = TBDeviceMqttClient.provision("127.0.0.1", "sdk-key", "sdk-secret", port=tb_sim.mqtt_port,
                                         device_name="sdk-dev", access_token="sdk-own-token")
    assert creds["credentialsValue"] == "sdk-own-token"
    client = TBDeviceMqttClient("127.0.0.1", port=tb_sim.mqtt_port, username="sdk-own-token")
    rpc_seen = []

    def on_rpc(request_id, body):
        rpc_seen.append((request_id, body))
        client.send_rpc_reply(request_id, {"state": "on", "asked": body["params"]})

    client.set_server_side_rpc_request_handler(on_rpc)
    shared = []
    shared_event = threading.Event()
    client.connect()
    try:
        assert tb_sim.wait_for(client.is_connected, 5)
        assert tb_sim.events("connect")[-1]["protocolLevel"] == 5
        client.subscribe_to_attribute("interval", lambda content, exc: (shared.append(content), shared_event.set()))
        assert client.send_telemetry({"temperature": 21.5, "energy": 1200}).get() == 0
        assert client.send_telemetry({"ts": 1700000000000, "values": {"energy": 1300}}).get() == 0
        assert client.send_attributes({"firmware": "1.0.0"}).get() == 0
        telemetry = tb_sim.telemetry("sdk-dev")
        assert telemetry[0]["values"] == {"temperature": 21.5, "energy": 1200}
        assert telemetry[1] == {"ts": 1700000000000, "values": {"energy": 1300}}
        assert tb_sim.device("sdk-dev")["clientAttributes"] == {"firmware": "1.0.0"}

        got = {}
        done = threading.Event()
        client.request_attributes(client_keys=["firmware"], callback=lambda content, exc: (got.update(content), done.set()))
        assert done.wait(5) and got == {"client": {"firmware": "1.0.0"}}

        # The SDK subscribes to RPC right after CONNACK; wait until that reached the server.
        assert tb_sim.wait_for(lambda: any("v1/devices/me/rpc/request/+" in [f for f, _ in e["filters"]]
                                           for e in tb_sim.events("subscribe")), 5)
        assert tb_sim.rpc("sdk-dev", "setRelay", {"on": True}, timeout_s=5) == {"state": "on", "asked": {"on": True}}
        assert rpc_seen[0][1] == {"method": "setRelay", "params": {"on": True}}

        tb_sim.push_shared_attributes("sdk-dev", {"interval": 30})
        assert shared_event.wait(5) and shared[0] == {"interval": 30}

        # The SDK asks for getSessionLimits by itself after connecting; tbsim answered it.
        assert tb_sim.wait_for(lambda: client.rate_limits_received, 5)
        assert any(e.get("method") == "getSessionLimits" for e in tb_sim.events("publish"))
    finally:
        client.disconnect()
