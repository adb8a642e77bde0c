# Device credentials as stored in state/creds.json and as used to connect.
#   {"type": "ACCESS_TOKEN", "token": "..."}
#   {"type": "MQTT_BASIC", "clientId": "...", "userName": "...", "password": "..."}


def valid(c):
    if not isinstance(c, dict):
        return False
    if c.get("type") == "ACCESS_TOKEN":
        return isinstance(c.get("token"), str) and len(c["token"]) > 0
    if c.get("type") == "MQTT_BASIC":
        return all(isinstance(c.get(k), str) for k in ("clientId", "userName", "password"))
    return False


def connect_params(creds, device_name):
    """(client id, username, password) for a normal session with these credentials."""
    if creds["type"] == "MQTT_BASIC":
        return creds["clientId"] or device_name, creds["userName"], creds["password"]
    # ThingsBoard ignores the client id of token sessions (sessions are keyed by device), but
    # it must never be "provision" (that makes a provision-only session, docs/thingsboard.md §1).
    return device_name, creds["token"], ""


def describe(creds):
    # A short name for a credential, for logs and status: never the secret.
    if creds is None:
        return ""
    if creds["type"] == "MQTT_BASIC":
        # The client id and user name are half of MQTT_BASIC's secret (config.SECRET_FIELDS).
        from firmware.log import mask
        return "basic:" + mask(creds["clientId"]) + ":" + mask(creds["userName"])
    return "token"

