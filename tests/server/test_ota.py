"""OTA packages (issue 18): upload and assignment through the admin API, what ThingsBoard writes and
pushes, and the MQTT chunk protocol with its sizes, limits and errors, seen with a raw client."""
import hashlib
import json

import pytest
import requests
from rawmqtt import RawClient, parse_publish, publish_packet, subscribe_packet

from tbsim import Profile, ota

IMAGE = bytes(range(256)) * 10 + b"tail"          # 2564 bytes


@pytest.fixture
def fleet(make_sim):
    sim = make_sim(profiles=[Profile("pk", "ps")])
    sim.add_device("meter-1", profile_key="pk", token="tok-1")
    sim.add_device("meter-2", profile_key="pk", token="tok-2")
    return sim


def session(sim, token="tok-1", subscribe=True):
    c = RawClient(sim.mqtt_port)
    assert c.connect("cid", token) == (0x20, b"\x00\x00")
    if subscribe:
        c.send(subscribe_packet(1, [("v1/devices/me/attributes", 1), ("v2/fw/response/+/chunk/+", 1),
                                    ("v2/fw/error", 1)]))
        assert c.read_packet() == (0x90, b"\x00\x01\x01\x01\x01")
    return c


def upload(sim, data=IMAGE, **query):
    query.setdefault("title", "meter-fw")
    query.setdefault("version", "2.0.0")
    return requests.post(f"http://127.0.0.1:{sim.http_port}/api/otaPackages", params=query, data=data, timeout=10)


def assign(sim, path, **body):
    r = requests.post(f"http://127.0.0.1:{sim.http_port}/api/{path}/ota", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def chunk(c, request_id, index, size, packet_id=7):
    c.send(publish_packet(f"v2/fw/request/{request_id}/chunk/{index}", size, qos=1, packet_id=packet_id))


def test_checksums_are_thingsboards_text():
    assert ota.checksum("CRC32", b"123456789") == "2639f4cb"            # 0xcbf43926, little-endian bytes
    assert ota.checksum("SHA256", b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert ota.checksum("MD5", b"abc") == hashlib.md5(b"abc").hexdigest()
    assert len(ota.checksum("MURMUR3_128", b"abc")) == 32 and len(ota.checksum("MURMUR3_32", b"abc")) == 8
    with pytest.raises(ValueError):
        ota.checksum("SHA1", b"abc")


def test_upload_computes_or_checks_the_checksum(fleet):
    r = upload(fleet)
    assert r.status_code == 201
    info = r.json()
    assert (info["size"], info["checksumAlgorithm"], info["checksum"]) == \
        (len(IMAGE), "SHA256", hashlib.sha256(IMAGE).hexdigest())
    wrong = upload(fleet, version="2.0.1", checksum="00" * 32)
    assert wrong.status_code == 400 and wrong.json()["error"] == "Wrong otaPackage file!"
    same = upload(fleet)
    assert same.status_code == 400 and "already exists" in same.json()["error"]
    crc = upload(fleet, version="2.0.2", checksumAlgorithm="CRC32").json()
    assert crc["checksum"] == ota.checksum("CRC32", IMAGE)
    assert [p["version"] for p in requests.get(f"http://127.0.0.1:{fleet.http_port}/api/otaPackages",
                                               timeout=10).json()] == ["2.0.0", "2.0.2"]


def test_profile_assignment_is_announced_as_thingsboard_does(fleet):
    c = session(fleet)
    package = upload(fleet).json()
    assign(fleet, "profiles/pk", firmwareId=package["id"])
    _, _, _, pushed = parse_publish(*c.read_packet())
    assert json.loads(pushed) == {"fw_title": "meter-fw", "fw_version": "2.0.0", "fw_size": len(IMAGE),
                                  "fw_checksum_algorithm": "SHA256", "fw_checksum": package["checksum"]}
    _, _, _, deleted = parse_publish(*c.read_packet())
    assert json.loads(deleted) == {"deleted": ["fw_tag", "fw_url"]}
    for name in ("meter-1", "meter-2"):
        series = [e["values"] for e in fleet.telemetry(name)]
        assert series[0]["target_fw_title"] == "meter-fw" and series[0]["target_fw_version"] == "2.0.0"
        assert isinstance(series[0]["target_fw_ts"], int)
        assert [v["fw_state"] for v in series] == ["QUEUED", "INITIATED"]
        assert fleet.device(name)["sharedAttributes"]["fw_version"] == "2.0.0"
    # The device's attribute request at connect finds them too.
    c.send(publish_packet("v1/devices/me/attributes/request/1", '{"sharedKeys":"fw_title,fw_version"}', qos=0))
    assert json.loads(parse_publish(*c.read_packet())[3]) == {"shared": {"fw_title": "meter-fw",
                                                                        "fw_version": "2.0.0"}}
    c.close()


def test_a_device_package_wins_over_the_profile_and_unassigning_falls_back(fleet):
    v2 = upload(fleet).json()
    v3 = upload(fleet, data=b"three", version="3.0.0").json()
    assign(fleet, "profiles/pk", firmwareId=v2["id"])
    assign(fleet, "devices/meter-1", firmwareId=v3["id"])
    assert fleet.device("meter-1")["sharedAttributes"]["fw_version"] == "3.0.0"
    assert fleet.device("meter-2")["sharedAttributes"]["fw_version"] == "2.0.0"
    assign(fleet, "profiles/pk", firmwareId=None)                      # meter-1 keeps its own
    assert fleet.device("meter-1")["sharedAttributes"]["fw_version"] == "3.0.0"
    assert not any(k.startswith("fw_") for k in fleet.device("meter-2")["sharedAttributes"])
    r = requests.delete(f"http://127.0.0.1:{fleet.http_port}/api/otaPackages/{v3['id']}", timeout=10)
    assert r.status_code == 409                                        # still assigned
    assign(fleet, "devices/meter-1", firmwareId=None)
    assert requests.delete(f"http://127.0.0.1:{fleet.http_port}/api/otaPackages/{v3['id']}",
                           timeout=10).status_code == 200


def test_chunks_sizes_and_the_end_of_the_file(fleet):
    fleet.assign_ota(profile="pk", firmware=fleet.add_ota_package("meter-fw", "2.0.0", data=IMAGE)["id"])
    c = session(fleet, subscribe=False)
    got = b""
    for index in range(3):
        chunk(c, 5, index, "1024" if index == 0 else "", packet_id=index + 1)   # empty: the remembered size
        assert c.read_packet() == (0x40, bytes([0, index + 1]))            # PUBACK first
        topic, qos, _, data = parse_publish(*c.read_packet())
        assert topic == f"v2/fw/response/5/chunk/{index}" and qos == 1        # QoS 1 without a subscription
        got += data
    assert got == IMAGE
    chunk(c, 5, 3, "1024")
    c.read_packet()
    assert parse_publish(*c.read_packet())[3] == b""                        # past the end: empty
    chunk(c, 6, "007", "0")                                                 # size 0: the whole file
    c.read_packet()
    topic, _, _, data = parse_publish(*c.read_packet())
    assert topic == "v2/fw/response/6/chunk/7" and data == IMAGE            # the chunk reprinted as an int
    chunk(c, 8, 0, "65536")                                                 # the limit itself passes
    c.read_packet()
    assert parse_publish(*c.read_packet())[3] == IMAGE
    c.close()


@pytest.mark.parametrize("size,error", [("65537", b"PAYLOAD_TOO_LARGE")])
def test_chunk_size_over_the_packet_limit(fleet, size, error):
    c = session(fleet)                                       # nothing assigned: the size is checked first
    chunk(c, 1, 0, size)
    topic, _, _, payload = parse_publish(*c.read_packet())   # no PUBACK before it
    assert (topic, payload) == ("v2/fw/error", error)
    assert c.expect_closed()


def test_errors_for_nothing_assigned_a_url_package_and_software_requests(fleet):
    c = session(fleet)
    chunk(c, 1, 0, "512")
    assert parse_publish(*c.read_packet())[:4:3] == ("v2/fw/error", b"NOT_FOUND")
    assert c.expect_closed()
    url = fleet.add_ota_package("meter-fw", "url-1", url="https://example.invalid/fw.bin")
    fleet.assign_ota(device="meter-1", firmware=url["id"])
    c = session(fleet)
    chunk(c, 1, 0, "512")
    assert parse_publish(*c.read_packet())[:4:3] == ("v2/fw/error", b"FAILURE")
    assert c.expect_closed()
    c = session(fleet, token="tok-2")
    c.send(publish_packet("v2/sw/request/1/chunk/0", "512", qos=1))
    assert parse_publish(*c.read_packet())[:4:3] == ("v2/fw/error", b"NOT_FOUND")    # fw topic for sw too
    assert c.expect_closed()


@pytest.mark.parametrize("topic,payload", [("v2/fw/request/1/chunk/0", "ten"),
                                           ("v2/fw/request/1/chunk/0", " 512"),
                                           ("v2/fw/request/1/chunk/99999999999", "512")])
def test_numbers_java_cannot_parse_close_the_session(fleet, topic, payload):
    fleet.assign_ota(profile="pk", firmware=fleet.add_ota_package("meter-fw", "2.0.0", data=IMAGE)["id"])
    c = session(fleet, subscribe=False)
    c.send(publish_packet(topic, payload, qos=1))
    assert c.expect_closed()


def test_a_request_id_keeps_its_package_and_int_overflow_sends_nothing(fleet):
    v2 = fleet.add_ota_package("meter-fw", "2.0.0", data=IMAGE)
    fleet.assign_ota(device="meter-1", firmware=v2["id"])
    c = session(fleet, subscribe=False)
    chunk(c, 3, 0, "100", packet_id=1)
    c.read_packet()
    assert parse_publish(*c.read_packet())[3] == IMAGE[:100]
    fleet.assign_ota(device="meter-1", firmware=fleet.add_ota_package("meter-fw", "3.0.0", data=b"x" * 300)["id"])
    chunk(c, 3, 1, "", packet_id=2)                                        # same requestId: still v2
    c.read_packet()
    assert parse_publish(*c.read_packet())[3] == IMAGE[100:200]
    chunk(c, 4, 0, "", packet_id=3)                                        # a new requestId: v3, size 0
    c.read_packet()
    assert parse_publish(*c.read_packet())[3] == b"x" * 300
    chunk(c, 9, 40000, "65536", packet_id=4)       # 65536 * 40000 overflows an int: PUBACK, then nothing
    assert c.read_packet() == (0x40, b"\x00\x04")
    assert c.expect_silence(0.4)
    c.close()


def test_device_reported_fw_state_is_telemetry(fleet):
    c = session(fleet, subscribe=False)
    c.send(publish_packet("v1/devices/me/telemetry", '{"fw_state":"DOWNLOADING","current_fw_version":"1.0.0"}',
                          qos=1))
    assert c.read_packet() == (0x40, b"\x00\x01")
    assert fleet.device("meter-1")["latestTelemetry"] == {"fw_state": "DOWNLOADING", "current_fw_version": "1.0.0"}
    c.close()


def test_packages_and_assignments_survive_the_state_file(tmp_path, make_sim):
    path = str(tmp_path / "state.json")
    sim = make_sim(profiles=[Profile("pk", "ps")], state_file=path)
    sim.add_device("m", profile_key="pk", token="t")
    package = sim.add_ota_package("meter-fw", "2.0.0", data=IMAGE)
    sim.assign_ota(profile="pk", firmware=package["id"])
    sim.stop()
    again = make_sim(state_file=path)
    c = session(again, token="t", subscribe=False)
    chunk(c, 1, 0, "0")
    c.read_packet()
    assert parse_publish(*c.read_packet())[3] == IMAGE
    c.close()
