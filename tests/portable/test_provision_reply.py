# Provisioning replies from a server that may be broken or hostile: the same verdict on CPython
# and on MicroPython for every reply in the corpus (run.py replays it on the Unix port).
# Nothing but a well-formed SUCCESS yields credentials; the detail names the field.

import json

from firmware import provision as P

TOKEN = '{"status":"SUCCESS","credentialsType":"ACCESS_TOKEN","credentialsValue":%s}'
BASIC = '{"status":"SUCCESS","credentialsType":"MQTT_BASIC","credentialsValue":%s}'

# (reply, outcome, a piece of the detail)
CORPUS = (
    (TOKEN % '"A1b2C3d4E5f6G7h8I9j0"', P.SUCCESS, ""),
    (TOKEN % '"t\\u00f6ken-\\u20ac"', P.SUCCESS, ""),  # non-ASCII is fine in MQTT strings
    (TOKEN % '"a b"', P.SUCCESS, ""),
    (TOKEN % '"ab\\u0000cd"', P.BAD_REPLY, "the token) has control characters"),  # U+0000
    (TOKEN % '"abc\\n"', P.BAD_REPLY, "has control characters"),
    (TOKEN % '"abc\\t"', P.BAD_REPLY, "has control characters"),
    (TOKEN % '"\\u001b[31mred"', P.BAD_REPLY, "has control characters"),
    (TOKEN % '"del\\u007f"', P.BAD_REPLY, "has control characters"),
    (TOKEN % '"c1\\u0085"', P.BAD_REPLY, "has control characters"),  # NEL, a C1 control
    (TOKEN % '"c1\\u009f"', P.BAD_REPLY, "has control characters"),
    (TOKEN % '"ok\\u00a0"', P.SUCCESS, ""),  # U+00A0 is not a control character
    (TOKEN % '"lone\\ud800"', P.BAD_REPLY, "escapes of UTF-16 surrogates"),
    (TOKEN % '"lone\\uDFFF"', P.BAD_REPLY, "escapes of UTF-16 surrogates"),
    # A pair: one character to CPython's json, two invalid ones to MicroPython's (CESU-8).
    (TOKEN % '"\\ud83d\\ude00"', P.BAD_REPLY, "escapes of UTF-16 surrogates"),
    (TOKEN % '"smile\U0001f600"', P.SUCCESS, ""),  # the same character as raw UTF-8: fine
    (TOKEN % '""', P.BAD_REPLY, "is an empty string"),
    (TOKEN % '"   "', P.BAD_REPLY, "is only spaces"),
    (TOKEN % '"provision"', P.BAD_REPLY, 'is "provision"'),
    (TOKEN % ('"%s"' % ("x" * 255)), P.SUCCESS, ""),
    (TOKEN % ('"%s"' % ("x" * 256)), P.BAD_REPLY, "is longer than 255 bytes"),
    (TOKEN % ('"%s"' % ("\\u00e9" * 128)), P.BAD_REPLY, "is longer than 255 bytes"),  # 256 bytes
    (TOKEN % "null", P.BAD_REPLY, "is not a string"),
    (TOKEN % "12345", P.BAD_REPLY, "is not a string"),
    (TOKEN % '["tok"]', P.BAD_REPLY, "is not a string"),
    (TOKEN % '{"token":"x"}', P.BAD_REPLY, "is not a string"),
    (BASIC % '{"clientId":"c","userName":"u","password":"p"}', P.SUCCESS, ""),
    (BASIC % '{"clientId":"c","userName":"","password":""}', P.SUCCESS, ""),
    (BASIC % '{"clientId":"","userName":"u","password":""}', P.SUCCESS, ""),
    (BASIC % '{"clientId":"c","userName":"u"}', P.BAD_REPLY, "MQTT_BASIC password is not in it"),
    (BASIC % '{"userName":"u","password":"p"}', P.BAD_REPLY, "MQTT_BASIC clientId is not in it"),
    (BASIC % '{"clientId":"c","password":"p"}', P.BAD_REPLY, "MQTT_BASIC userName is not in it"),
    (BASIC % '{"clientId":null,"userName":"u","password":"p"}', P.BAD_REPLY,
     "MQTT_BASIC clientId is not a string"),
    (BASIC % '{"clientId":"c","userName":"u","password":7}', P.BAD_REPLY,
     "MQTT_BASIC password is not a string"),
    (BASIC % '{"clientId":"c","userName":"u\\u0000","password":"p"}', P.BAD_REPLY,
     "MQTT_BASIC userName has control characters"),
    (BASIC % '{"clientId":"","userName":"","password":""}', P.BAD_REPLY,
     "clientId and userName both empty"),
    (BASIC % '{"clientId":"c","userName":"","password":"p"}', P.BAD_REPLY,
     "password without userName"),
    (BASIC % '{"clientId":"provision","userName":"u","password":"p"}', P.BAD_REPLY,
     'clientId is "provision"'),
    (BASIC % '"c:u:p"', P.BAD_REPLY, "not an object"),
    ('{"status":"SUCCESS","credentialsType":"X509_CERTIFICATE","credentialsValue":"pem"}',
     P.BAD_REPLY, "unusable credentials (type X509_CERTIFICATE)"),
    ('{"status":"SUCCESS"}', P.BAD_REPLY, "unusable credentials (type <NoneType>)"),
    ('{"status":"UNKNOWN"}', P.BAD_REPLY, "unknown status UNKNOWN"),
    ('{"status":"SUCCESS\\n0.000 I provision: SUCCESS"}', P.BAD_REPLY,
     "unknown status SUCCESS\\x0a0.000 I provision: SUCCESS"),
    ('{"status":7}', P.BAD_REPLY, "unknown status <int>"),
    ('{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}', P.NOT_FOUND,
     "Provision data was not found!"),
    ('{"errorMsg":"no\\r\\nW fake line \\u001b[2J","status":"FAILURE"}', P.FAILURE,
     "no\\x0d\\x0aW fake line \\x1b[2J"),
    ('{"errorMsg":"' + "e" * 200 + '","status":"FAILURE"}', P.FAILURE, "e" * 60 + "..."),
    ('{"errorMsg":"d\\u00e9j\\u00e0","status":"FAILURE"}', P.FAILURE, "d\\xc3\\xa9j\\xc3\\xa0"),
    ('{"status":"FAILURE"}', P.FAILURE, "<NoneType>"),
    (BASIC % json.dumps({"clientId": "\u00e9" * 127, "userName": "\u00ff" * 127,
                         "password": "\u0100" * 127}), P.SUCCESS, ""),  # the longest valid one
    (TOKEN % ('"%s"' % ("x" * 2600)), P.BAD_REPLY, "bytes, more than any valid reply"),
    ("[]", P.BAD_REPLY, "not a JSON object"),
    ("null", P.BAD_REPLY, "not a JSON object"),
    ("not json", P.BAD_REPLY, "not valid JSON"),
    ("", P.BAD_REPLY, "not valid JSON"),
    ('{"status":' + "[" * 60 + "]" * 60 + "}", P.BAD_REPLY, ""),
)


def test_every_reply_in_the_corpus():
    for text, outcome, piece in CORPUS:
        got, creds, detail = P.parse_reply(text.encode())
        assert got == outcome, (text, got, detail)
        assert (creds is not None) == (outcome == P.SUCCESS), text
        assert piece in detail, (text, detail)
        assert len(detail) < 140 and "\n" not in detail and "\x1b" not in detail, detail


def test_success_gives_exactly_the_credentials_sent():
    for text, outcome, _ in CORPUS:
        if outcome != P.SUCCESS:
            continue
        value = json.loads(text)["credentialsValue"]
        _, creds, _ = P.parse_reply(text.encode())
        if isinstance(value, str):
            assert creds == {"type": "ACCESS_TOKEN", "token": value}
        else:
            assert creds == {"type": "MQTT_BASIC", "clientId": value["clientId"],
                             "userName": value["userName"], "password": value["password"]}


def test_raw_bytes_that_are_not_utf8_are_bad_replies():
    for raw in (b"\xff\xfe{", b'{"status":"SUCCESS","credentialsType":"ACCESS_TOKEN",'
                              b'"credentialsValue":"\xff"}', b"\xc0\xafx"):
        got, creds, _ = P.parse_reply(raw)
        assert creds is None and got == P.BAD_REPLY, raw
