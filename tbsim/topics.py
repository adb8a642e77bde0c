"""ThingsBoard device topics (MqttTopics.java) and the subscription rules of processSubscribe.

A session remembers which topic family (v1 or the v2 short forms) it used to subscribe or to ask,
because TB answers on the same family (TopicType in MqttTransportHandler).
"""
import re

PROVISION_REQUEST = "/provision/request"
PROVISION_RESPONSE = "/provision/response"

TELEMETRY = "v1/devices/me/telemetry"
ATTRIBUTES = "v1/devices/me/attributes"
ATTRIBUTES_REQUEST = "v1/devices/me/attributes/request/"
ATTRIBUTES_RESPONSE = "v1/devices/me/attributes/response/"
RPC_REQUEST = "v1/devices/me/rpc/request/"
RPC_RESPONSE = "v1/devices/me/rpc/response/"
CLAIM = "v1/devices/me/claim"
FW_ERROR = "v2/fw/error"                  # also for software requests (sendOtaPackageError)


class TopicType:
    """The four topic bases of one family (TB's TopicType enum, JSON flavours only)."""

    def __init__(self, name, attributes_sub, attributes_response, rpc_request, rpc_response):
        self.name = name
        self.attributes_sub = attributes_sub
        self.attributes_response = attributes_response
        self.rpc_request = rpc_request
        self.rpc_response = rpc_response


V1 = TopicType("V1", ATTRIBUTES, ATTRIBUTES_RESPONSE, RPC_REQUEST, RPC_RESPONSE)
V2 = TopicType("V2", "v2/a", "v2/a/res/", "v2/r/req/", "v2/r/res/")
V2_JSON = TopicType("V2_JSON", "v2/a/j", "v2/a/res/j/", "v2/r/req/j/", "v2/r/res/j/")

# Subscribe filters.
ATTRIBUTE_SUBSCRIPTIONS = {ATTRIBUTES: V1, "v2/a": V2, "v2/a/j": V2_JSON}
RPC_SUBSCRIPTIONS = {RPC_REQUEST + "+": V1, "v2/r/req/+": V2, "v2/r/req/j/+": V2_JSON}
PLAIN_SUBSCRIPTIONS = {
    RPC_RESPONSE + "+", "v2/r/res/+", "v2/r/res/j/+",
    ATTRIBUTES_RESPONSE + "+", "v2/a/res/+", "v2/a/res/j/+",
    "v1/gateway/attributes", "v1/gateway/rpc", "v1/gateway/attributes/response",
    "v2/fw/response/+/chunk/+", FW_ERROR, "v2/sw/response/+/chunk/+", "v2/sw/error",
}


def matches(topic_filter, topic):
    """MQTT filter matching with + and # (MqttTopicMatcher)."""
    f_parts = topic_filter.split("/")
    t_parts = topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts):
            return False
        if part != "+" and part != t_parts[i]:
            return False
    return len(f_parts) == len(t_parts)


# MqttTransportHandler's FW_REQUEST_PATTERN / SW_REQUEST_PATTERN, used with Matcher.find(): the
# pattern may match anywhere in the topic ("x/v2/fw/request/1/chunk/2/y" is a request too).
_OTA_REQUEST = {kind: re.compile(rf"v2/{kind}/request/(?P<requestId>[0-9]+)/chunk/(?P<chunk>[0-9]+)")
                for kind in ("fw", "sw")}


def ota_request(topic):
    """('fw'|'sw', request_id, chunk_text) when the topic is an OTA chunk request, else None.

    The firmware pattern is tried first, as in processDevicePublish. The request id is echoed as
    written; the chunk number is parsed later (and may overflow an int)."""
    for kind, pattern in _OTA_REQUEST.items():
        m = pattern.search(topic)
        if m:
            return kind, m.group("requestId"), m.group("chunk")
    return None


# ---- device-profile topic filters (MqttTopicFilterFactory and its three filter classes) ----------

_FILTERS = {}


def profile_filter(text):
    """A matcher for a profile's telemetry or attributes topic filter, as ThingsBoard builds it.

    "#" alone matches everything. A filter containing "+" or "#" becomes a regular expression: "\\"
    is escaped, "+" becomes "[^/]+" (so it needs at least one character, unlike MQTT), "/#" becomes
    "($|/.*)" (so "a/#" matches "a"), and every other character is left as it is, regex
    metacharacters included ("." matches any character, a "#" not after "/" stays literal). The
    whole topic must match. Anything else is compared with String.equals. Raises ValueError for an
    empty filter, or one whose regular expression does not compile (TB would fail on it too)."""
    if not text:
        raise ValueError("Topic filter can't be empty!")
    matcher = _FILTERS.get(text)
    if matcher is None:
        if text == "#":
            def matcher(topic):
                return True
        elif "+" in text or "#" in text:
            regex = text.replace("\\", "\\\\").replace("+", "[^/]+").replace("/#", "($|/.*)")
            try:
                compiled = re.compile(regex)             # Pattern.compile: no DOTALL
            except re.error as e:
                raise ValueError(f"topic filter {text!r} is not a valid pattern: {e}") from None

            def matcher(topic, compiled=compiled):
                return compiled.fullmatch(topic) is not None
        else:
            def matcher(topic, text=text):
                return topic == text
        _FILTERS[text] = matcher
    return matcher


# ---- PUBLISH dispatch (MqttTransportHandler.processDevicePublish) ---------------------------------

_V2_FIXED = (
    ("v2/t", "telemetry", V2), ("v2/t/j", "telemetry", V2_JSON), ("v2/t/p", "protobuf", None),
    ("v2/a", "attributes", V2), ("v2/a/j", "attributes", V2_JSON), ("v2/a/p", "protobuf", None),
)
_V2_PREFIXES = (
    ("v2/r/res/j/", "rpc-response", V2_JSON), ("v2/r/res/p/", "protobuf", None), ("v2/r/res/", "rpc-response", V2),
    ("v2/r/req/j/", "client-rpc", V2_JSON), ("v2/r/req/p/", "protobuf", None), ("v2/r/req/", "client-rpc", V2),
    ("v2/a/req/j/", "attribute-request", V2_JSON), ("v2/a/req/p/", "protobuf", None),
    ("v2/a/req/", "attribute-request", V2),
)


def classify(topic, profile):
    """(kind, rest, family) of a device PUBLISH, tested in ThingsBoard's order: the profile's
    attributes filter, its telemetry filter, the v1 request prefixes, claim, the OTA patterns, then
    the v2 short topics. `rest` is what follows a prefix (a request id), or the OTA match."""
    if profile.is_attributes(topic):
        return "attributes", None, V1
    if profile.is_telemetry(topic):
        return "telemetry", None, V1
    for prefix, kind in ((ATTRIBUTES_REQUEST, "attribute-request"), (RPC_RESPONSE, "rpc-response"),
                         (RPC_REQUEST, "client-rpc")):
        if topic.startswith(prefix):
            return kind, topic[len(prefix):], V1
    if topic == CLAIM:
        return "claim", None, V1
    request = ota_request(topic)
    if request is not None:
        return "ota", request, None
    for name, kind, family in _V2_FIXED:
        if topic == name:
            return kind, None, family
    for prefix, kind, family in _V2_PREFIXES:
        if topic.startswith(prefix):
            return kind, topic[len(prefix):], family
    return "unknown", None, None
