"""ThingsBoard device topics (MqttTopics.java) and the subscription rules of processSubscribe.

A session remembers which topic family (v1 or the v2 short forms) it used to subscribe or to ask,
because TB answers on the same family (TopicType in MqttTransportHandler).
"""
PROVISION_REQUEST = "/provision/request"
PROVISION_RESPONSE = "/provision/response"

TELEMETRY = "v1/devices/me/telemetry"
ATTRIBUTES = "v1/devices/me/attributes"
ATTRIBUTES_REQUEST = "v1/devices/me/attributes/request/"
ATTRIBUTES_RESPONSE = "v1/devices/me/attributes/response/"
RPC_REQUEST = "v1/devices/me/rpc/request/"
RPC_RESPONSE = "v1/devices/me/rpc/response/"
CLAIM = "v1/devices/me/claim"
FW_ERROR = "v2/fw/error"


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

# Publish topics, in the order processDevicePublish tests them (prefix entries end with '/').
TELEMETRY_TOPICS = {TELEMETRY: V1, "v2/t": V2, "v2/t/j": V2_JSON}
ATTRIBUTE_TOPICS = {ATTRIBUTES: V1, "v2/a": V2, "v2/a/j": V2_JSON}
ATTRIBUTE_REQUEST_PREFIXES = ((ATTRIBUTES_REQUEST, V1), ("v2/a/req/j/", V2_JSON), ("v2/a/req/", V2))
RPC_RESPONSE_PREFIXES = ((RPC_RESPONSE, V1), ("v2/r/res/j/", V2_JSON), ("v2/r/res/", V2))
RPC_REQUEST_PREFIXES = ((RPC_REQUEST, V1), ("v2/r/req/j/", V2_JSON), ("v2/r/req/", V2))
PROTOBUF_TOPICS_PREFIXES = ("v2/t/p", "v2/a/p", "v2/r/res/p/", "v2/r/req/p/", "v2/a/req/p/")

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


def ota_request(topic):
    """('fw'|'sw', request_id, chunk_text) for v2/{fw,sw}/request/<id>/chunk/<n>, else None."""
    parts = topic.split("/")
    if len(parts) == 6 and parts[0] == "v2" and parts[1] in ("fw", "sw") and parts[2] == "request" \
            and parts[4] == "chunk" and parts[3].isdigit() and parts[5].isdigit():
        return parts[1], parts[3], parts[5]
    return None
