"""Key validation when data is saved (ThingsBoard's KvUtils.validate and NoXssValidator).

ThingsBoard runs it in the rule engine's save nodes, long after the transport queued the message
and sent the PUBACK. One bad key makes the save throw before anything is written, so the whole
message (every key, every ts group) is dropped, and the device never hears of it.

    thingsboard/thingsboard : dao/src/main/java/org/thingsboard/server/dao/util/KvUtils.java
    thingsboard/thingsboard : dao/src/main/java/org/thingsboard/server/dao/service/NoXssValidator.java
"""
import re

MAX_KEY_LENGTH = 255

# NoXssValidator: "{{...}}" anywhere (a template expression) is refused outright.
_TEMPLATE = re.compile(r"\{\{.*}}", re.DOTALL)
# Then an AntiSamy scan with TB's XSS policy must report no error. tbsim approximates the scan:
# anything that starts a tag, an end tag, a comment or a processing instruction is HTML to it.
_MARKUP = re.compile(r"<[A-Za-z/!?]")


def _java_length(key):
    """String.length(): UTF-16 code units, so a character outside the BMP counts twice."""
    return len(key.encode("utf-16-le")) // 2


def _java_blank(key):
    """StringUtils.isBlank: empty, or only characters Character.isWhitespace accepts."""
    return not key or all(ch.isspace() for ch in key)


def key_error(key):
    """The validator's message for an invalid key, or None when ThingsBoard saves it."""
    if _java_blank(key):
        return "Key can't be null or empty"
    if _java_length(key) > MAX_KEY_LENGTH:
        return "Validation error: key length must be equal or less than 255"
    if _TEMPLATE.search(key) or _MARKUP.search(key):
        return "Validation error: key is malformed"
    return None


def first_invalid(keys):
    """(key, message) of the first invalid key, or None. The whole list is checked before any
    write, so one such key means nothing of the message is saved."""
    for key in keys:
        error = key_error(key)
        if error is not None:
            return key, error
    return None
