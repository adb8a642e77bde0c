"""Runs in a subprocess with upstream paho-mqtt first on sys.path (see test_paho_crosscheck.py).

usage: paho_check.py PAHO_DIR PORT TOKEN
Prints one JSON object per line; waits for "go" lines on stdin where the test drives the server.
"""
import json
import sys
import threading
import time

paho_dir, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, paho_dir)
import paho.mqtt.client as mqtt  # noqa: E402


def out(**kw):
    print(json.dumps(kw), flush=True)


def client(protocol=mqtt.MQTTv311, client_id="paho-check"):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    state = {"connected": threading.Event(), "messages": [], "got": threading.Event()}

    def on_connect(cl, userdata, flags, reason_code, properties):
        state["rc"] = reason_code.getName()
        state["connected"].set()

    def on_message(cl, userdata, msg):
        state["messages"].append((msg.topic, msg.qos, msg.payload.decode()))
        state["got"].set()

    c.on_connect = on_connect
    c.on_message = on_message
    return c, state


def wait_message(state, timeout=5):
    assert state["got"].wait(timeout), "no message"
    state["got"].clear()
    return state["messages"][-1]


import paho.mqtt  # noqa: E402

out(paho_file=mqtt.__file__, version=paho.mqtt.__version__)

# 1. Unknown token on MQTT 3.1.1 -> CONNACK 5, which paho reports as "Not authorized".
c, st = client()
c.username_pw_set("no-such-token")
c.connect("127.0.0.1", port)
c.loop_start()
st["connected"].wait(5)
c.loop_stop()
c.disconnect()
out(step="bad-token", rc=st.get("rc"))

# 2. Provisioning with client id "provision".
c, st = client(client_id="provision")
c.connect("127.0.0.1", port)
c.loop_start()
st["connected"].wait(5)
c.subscribe("/provision/response", qos=1)
c.publish("/provision/request", json.dumps({"provisionDeviceKey": "pk", "provisionDeviceSecret": "ps",
                                            "deviceName": "paho-device"}), qos=1).wait_for_publish(5)
topic, qos, payload = wait_message(st)
c.disconnect()
c.loop_stop()
out(step="provision", topic=topic, qos=qos, payload=json.loads(payload))
new_token = json.loads(payload)["credentialsValue"]

# 3. A device session: QoS 1 telemetry, RPC, shared attributes.
c, st = client(client_id="paho-device-session")
c.username_pw_set(new_token)
c.connect("127.0.0.1", port, keepalive=1)
c.loop_start()
st["connected"].wait(5)
info = c.publish("v1/devices/me/telemetry", json.dumps({"paho": 1}), qos=1)
info.wait_for_publish(5)
out(step="telemetry", published=info.is_published())
c.subscribe([("v1/devices/me/rpc/request/+", 1), ("v1/devices/me/attributes", 1)])
time.sleep(0.3)
out(step="ready-for-rpc")
topic, qos, payload = wait_message(st)
request_id = topic.rsplit("/", 1)[1]
c.publish(f"v1/devices/me/rpc/response/{request_id}", json.dumps({"echo": json.loads(payload)}), qos=1).wait_for_publish(5)
out(step="rpc", topic=topic, qos=qos, payload=json.loads(payload))
topic, qos, payload = wait_message(st)
out(step="shared", topic=topic, qos=qos, payload=json.loads(payload))
time.sleep(3)                       # longer than tbsim's inactivity timeout: only PINGREQs keep it
info = c.publish("v1/devices/me/telemetry", json.dumps({"after_ping": 1}), qos=1)
info.wait_for_publish(5)
out(step="after-keepalive", published=info.is_published())
c.disconnect()
c.loop_stop()

# 4. MQTT 5: an invalid QoS 1 publish gets PUBACK 0x99 and the session stays.
c, st = client(protocol=mqtt.MQTTv5, client_id="paho-v5")
reasons = []
c.on_publish = lambda cl, ud, mid, reason_code, props: reasons.append(reason_code.getName())
c.username_pw_set(new_token)
c.connect("127.0.0.1", port)
c.loop_start()
st["connected"].wait(5)
c.publish("v1/devices/me/telemetry", "not json", qos=1).wait_for_publish(5)
c.publish("v1/devices/me/telemetry", json.dumps({"v5": 1}), qos=1).wait_for_publish(5)
c.disconnect()
c.loop_stop()
out(step="v5", connect=st.get("rc"), reasons=reasons)
