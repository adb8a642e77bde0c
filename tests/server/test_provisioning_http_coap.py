"""Provisioning over HTTP and CoAP (the shared core), and the request shapes of ThingsBoard's own
provisioning examples (thingsboard/thingsboard.github.io : _includes/templates/provisioning/
{http,coap,mqtt}-*-credentials-type.md): requests.post, aiocoap and paho, called as they call them."""
import asyncio
import json
import threading
import time

import aiocoap
import pytest
import requests
from rawmqtt import RawClient

KEY, SECRET = "meter-key", "meter-secret"
NOT_FOUND = b'{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}'
FAILURE = b'{"errorMsg":"Failed to provision device!","status":"FAILURE"}'
# The examples' telemetry sample (every value type once).
TO_PUBLISH = {"stringKey": "value1", "booleanKey": True, "doubleKey": 42.0, "longKey": 73,
              "jsonKey": {"someNumber": 42, "someArray": [1, 2, 3], "someNestedObject": {"key": "value"}}}


@pytest.fixture
def sim(make_sim):
    return make_sim(coap_port=0)


def body(**fields):
    req = {"provisionDeviceKey": KEY, "provisionDeviceSecret": SECRET}
    req.update(fields)
    return req


def coap(port, code, path, payload=b"", timeout=10):
    async def run():
        ctx = await aiocoap.Context.create_client_context()
        try:
            msg = aiocoap.Message(code=code, payload=payload, uri=f"coap://127.0.0.1:{port}/{path}")
            return await asyncio.wait_for(ctx.request(msg).response, timeout)
        finally:
            await ctx.shutdown()
    return asyncio.run(run())


# ---- HTTP (DeviceApiController) -------------------------------------------------------------------

def test_http_example_shape_provisions_and_posts_telemetry_with_the_token(sim):
    base = "http://127.0.0.1:%i" % sim.http_port               # the example's "%s:%i" host:port form
    response = requests.post("%s/api/v1/provision" % base, json=body(deviceName="http-1"), timeout=10)
    assert response.status_code == 200
    decoded = response.json()
    token = sim.device("http-1")["credentials"]
    assert response.content == ('{"credentialsValue":"%s","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}'
                                % token).encode()
    telemetry = requests.post("%s/api/v1/%s/telemetry" % (base, decoded["credentialsValue"]), json.dumps(TO_PUBLISH),
                              timeout=10)
    assert telemetry.status_code == 200 and telemetry.content == b""
    assert sim.telemetry("http-1")[-1]["values"] == {**TO_PUBLISH, "doubleKey": 42.0}
    assert sim.events("provision")[-1]["transport"] == "http"


def test_http_device_supplied_token_and_every_status_is_200(sim):
    url = f"http://127.0.0.1:{sim.http_port}/api/v1/provision"
    ok = requests.post(url, json=body(deviceName="h2", credentialsType="ACCESS_TOKEN", token="own-token-h2"), timeout=10)
    assert ok.status_code == 200 and ok.json()["credentialsValue"] == "own-token-h2"
    again = requests.post(url, json=body(deviceName="h2"), timeout=10)                 # the name exists
    assert (again.status_code, again.content) == (200, FAILURE)
    wrong = requests.post(url, json=body(provisionDeviceSecret="nope"), timeout=10)
    assert (wrong.status_code, wrong.content) == (200, NOT_FOUND)
    with RawClient(sim.mqtt_port) as c:                                               # the token works
        assert c.connect("cid", "own-token-h2") == (0x20, b"\x00\x00")


@pytest.mark.parametrize("payload,status,error_code", [
    (b"not json {", 500, 2), (b"[1]", 500, 2), (json.dumps({"provisionDeviceKey": KEY}).encode(), 500, 2),
    (json.dumps(body(token=None)).encode(), 500, 2), (json.dumps(body(credentialsType="BOGUS")).encode(), 500, 2),
    (b"", 400, 31),
])
def test_http_malformed_requests_get_the_error_handlers_json(sim, payload, status, error_code):
    r = requests.post(f"http://127.0.0.1:{sim.http_port}/api/v1/provision", data=payload, timeout=10)
    assert r.status_code == status
    err = r.json()
    assert err["status"] == status and err["errorCode"] == error_code and err["message"]
    assert sim.devices() == []


def test_http_lenient_json_is_accepted_as_gson_accepts_it(sim):
    r = requests.post(f"http://127.0.0.1:{sim.http_port}/api/v1/provision", timeout=10,
                      data=f"{{provisionDeviceKey: '{KEY}', provisionDeviceSecret: {SECRET}; deviceName=lenient}}")
    assert r.status_code == 200 and r.json()["status"] == "SUCCESS" and sim.device("lenient")


def test_http_telemetry_with_unknown_token_is_401_and_bad_json_500(sim):
    base = f"http://127.0.0.1:{sim.http_port}/api/v1"
    assert requests.post(f"{base}/no-such-token/telemetry", data="{}", timeout=10).status_code == 401
    sim.add_device("m", token="tok-m")
    assert requests.post(f"{base}/tok-m/telemetry", data="[1]", timeout=10).status_code == 500
    assert requests.post(f"{base}/tok-m/attributes", data='{"fw":"1"}', timeout=10).status_code == 200
    assert sim.device("m")["clientAttributes"] == {"fw": 1}           # the device path type-casts "1"


# ---- CoAP (CoapTransportResource) -----------------------------------------------------------------

def test_coap_example_shape_provisions_and_posts_telemetry(sim):
    # The example: POST with the JSON as payload and no Content-Format, then telemetry with the token.
    response = coap(sim.coap_port, aiocoap.Code.POST, "api/v1/provision", str.encode(json.dumps(body(deviceName="c1"))))
    assert response.code == aiocoap.Code.CREATED                                        # 2.01, not 2.05
    assert response.opt.content_format == 0                                              # text/plain
    decoded = json.loads(response.payload)
    assert decoded == {"credentialsValue": sim.device("c1")["credentials"], "credentialsType": "ACCESS_TOKEN",
                       "status": "SUCCESS"}
    telemetry = coap(sim.coap_port, aiocoap.Code.POST, "api/v1/%s/telemetry" % decoded["credentialsValue"],
                     str.encode(json.dumps(TO_PUBLISH)))
    assert telemetry.code == aiocoap.Code.CREATED
    assert sim.telemetry("c1")[-1]["values"]["longKey"] == 73


def test_coap_not_found_and_failure_are_4_00_with_the_json(sim):
    assert coap(sim.coap_port, aiocoap.Code.POST, "api/v1/provision", json.dumps(body(deviceName="c2")).encode()).code \
        == aiocoap.Code.CREATED
    failure = coap(sim.coap_port, aiocoap.Code.POST, "api/v1/provision", json.dumps(body(deviceName="c2")).encode())
    assert (failure.code, failure.payload, failure.opt.content_format) == (aiocoap.Code.BAD_REQUEST, FAILURE, 0)
    missing = coap(sim.coap_port, aiocoap.Code.POST, "api/v1/provision",
                   json.dumps(body(provisionDeviceKey="other")).encode())
    assert (missing.code, missing.payload) == (aiocoap.Code.BAD_REQUEST, NOT_FOUND)


def test_coap_malformed_methods_paths_and_tokens(sim):
    port = sim.coap_port
    bad = coap(port, aiocoap.Code.POST, "api/v1/provision", b"{not json")
    assert (bad.code, bad.payload) == (aiocoap.Code.BAD_REQUEST, b"")
    assert coap(port, aiocoap.Code.GET, "api/v1/provision").code == aiocoap.Code.BAD_REQUEST
    assert coap(port, aiocoap.Code.PUT, "api/v1/provision").code == aiocoap.Code.METHOD_NOT_ALLOWED
    assert coap(port, aiocoap.Code.POST, "other/path").code == aiocoap.Code.NOT_FOUND
    assert coap(port, aiocoap.Code.POST, "api/v1/unknown-token/telemetry", b"{}").code == aiocoap.Code.UNAUTHORIZED
    # ThingsBoard's own test client puts a token segment before "provision": also provisioning.
    four = coap(port, aiocoap.Code.POST, "api/v1/anything/provision", json.dumps(body(deviceName="c4")).encode())
    assert four.code == aiocoap.Code.CREATED and sim.device("c4")


def test_coap_slow_core_gets_a_separate_response(make_sim):
    sim = make_sim(coap_port=0, provision_delay_s=0.6)        # longer than aiocoap's 0.1 s empty-ACK delay
    t0 = time.monotonic()
    response = coap(sim.coap_port, aiocoap.Code.POST, "api/v1/provision", json.dumps(body(deviceName="slow")).encode())
    assert response.code == aiocoap.Code.CREATED and time.monotonic() - t0 >= 0.6


# ---- MQTT, the paho example ------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Callback API version 1 is deprecated")
def test_mqtt_paho_example_shape_provisions_then_connects_with_the_token(sim):
    from paho.mqtt.client import Client                    # as the example imports it (callback API 1)
    got, connected = {}, threading.Event()

    class ProvisionClient(Client):
        def __init__(self):
            super().__init__()
            self._username = "provision"                   # the example sets the attribute directly
            self.on_connect = self.connected
            self.on_message = self.message

        def connected(self, client, userdata, flags, rc):
            client.subscribe("/provision/response")        # QoS 0, like the example
            client.publish("/provision/request", json.dumps(body(deviceName="paho-1")))   # QoS 0, ", " separators

        def message(self, client, userdata, msg):
            got.update(json.loads(msg.payload.decode("UTF-8")))
            self.disconnect()

    provision_client = ProvisionClient()
    provision_client.connect("127.0.0.1", sim.mqtt_port, 60)
    loop = threading.Thread(target=provision_client.loop_forever, daemon=True)
    loop.start()
    loop.join(10)
    assert not loop.is_alive() and got["status"] == "SUCCESS"

    tb_client = Client()
    tb_client.username_pw_set(got["credentialsValue"])
    tb_client.on_connect = lambda client, userdata, flags, rc: (got.update(rc=rc), connected.set())
    tb_client.connect("127.0.0.1", sim.mqtt_port, 60)
    tb_client.loop_start()
    try:
        assert connected.wait(10) and got["rc"] == 0
    finally:
        tb_client.disconnect()
        tb_client.loop_stop()


# ---- the storm mode (issue 11) ---------------------------------------------------------------------

def test_success_then_refuse_mode_on_every_transport(make_sim):
    sim = make_sim(coap_port=0, provisioning="success-then-refuse")
    tokens = [requests.post(f"http://127.0.0.1:{sim.http_port}/api/v1/provision", json=body(deviceName="s"),
                            timeout=10).json()["credentialsValue"] for _ in range(2)]
    response = coap(sim.coap_port, aiocoap.Code.POST, "api/v1/provision", json.dumps(body(deviceName="s")).encode())
    tokens.append(json.loads(response.payload)["credentialsValue"])
    own = requests.post(f"http://127.0.0.1:{sim.http_port}/api/v1/provision", timeout=10,
                        json=body(deviceName="s", credentialsType="ACCESS_TOKEN", token="own-tok")).json()
    assert own == {"credentialsValue": "own-tok", "credentialsType": "ACCESS_TOKEN", "status": "SUCCESS"}
    assert len(set(tokens)) == 3                                  # SUCCESS every time, never FAILURE
    for token in tokens + ["own-tok"]:
        with RawClient(sim.mqtt_port) as c:
            assert c.connect("cid", token) == (0x20, b"\x00\x05")
    wrong = requests.post(f"http://127.0.0.1:{sim.http_port}/api/v1/provision", timeout=10,
                          json=body(provisionDeviceSecret="x")).json()
    assert wrong["status"] == "NOT_FOUND"                          # the profile check still applies
    assert sim.devices() == []
