# The supervisor's connect and attributes states (firmware/supervisor.py): the device session's
# CONNECT and what its answer means, then the attributes' PUBLISH. Loaded by
# Supervisor._advance() for one step in either state and unloaded after it, so none of this
# is resident while provisioning (whose connect, with its TLS handshake, is the heap's high
# point) or in the run state. What a refused CONNECT means for the credentials is decided in
# firmware/provision.py (loaded only then); it is applied here.
#
# Two of the supervisor's states in a file of their own, for RAM: they drive it through its
# methods (_goto and _retry for the state, _keep_credentials, on_connect for the session's
# RPC handler) and write none of its fields (tests/unit/test_ownership.py). What a CONNACK
# says about the credentials is connect()'s return value, which Supervisor._advance() applies.

import gc

from micropython import const

from firmware import credentials, unload
from firmware.attributes import TOPIC, payload
from firmware.link import LinkError
from firmware.log import mask
from firmware.states import ATTRIBUTES, CONNECT, KEEP_WORKING, PROVISION, REFUSED, RUN, TIME, WIFI

_NOT_SET = const(" (clock not set: the time is synced first)")


def connect(sup):
    """The connect state's step. Returns None when no CONNACK judged the credentials (none to
    connect with, no session, CONNACK 1 or 3); after CONNACK 0, 2, 4 or 5: whether the stored
    credentials stand refused this boot (the configured token has had its one try then)."""
    cfg = sup.cfg
    creds = sup._candidate or sup.creds
    if creds is None:
        sup._goto(PROVISION)
        return
    sup._end_session()
    gc.collect()  # the TLS handshake wants large blocks
    cid, user, pw = credentials.connect_params(creds, sup.device_name)
    token = creds["type"] == "ACCESS_TOKEN"
    sup.log.info("connect", "to %s:%d as %s (%s %s)", cfg["tb_host"], cfg["tb_port"],
                 cid if token else mask(cid),  # MQTT_BASIC's client id is a secret too
                 credentials.describe(creds), mask(user if token else pw))
    link = sup.link
    sup.hal.wdt_feed()  # a safe point: DNS, then the CONNECT exchange under its deadline
    try:
        rc = link.open(cfg["tb_host"], cfg["tb_port"], cid, user, pw, cfg["keepalive_s"],
                       sup.tls)
    except LinkError as e:
        delay = sup._retry(CONNECT)
        # mbedTLS judges the certificate's dates by the RTC ("starts in the future", "has
        # expired"): the clock is the first suspect. The time state syncs it and goes on if
        # NTP answers, after this backoff like any retry.
        dates = sup.tls is not None and "certificate validity" in str(e)
        sup.log.warn("connect", "%s%s; retrying in %d s", e,
                     _NOT_SET if dates and not sup._clock.synced else "", delay // 1000)
        if dates:
            sup._goto(TIME, delay)
            return
        if not sup.hal.wifi_connected():
            sup._goto(WIFI, delay)
        return
    if rc == 0:
        if sup._candidate is not None:
            # The platform accepted the configured token: the device is ours.
            sup._keep_credentials(creds)
            sup.log.info("connect", "device token accepted; stored as credentials")
        elif "working" in creds:
            # Issued credentials proved: the working ones kept beside them can go.
            sup._keep_credentials({k: creds[k] for k in creds if k != "working"})
        sup.log.info("connect", "connected")
        try:
            # After the CONNACK, with the provisioning code and the handshake's garbage
            # gone. (Inline, not a function: each name is interned for good.)
            gc.collect()
            from firmware.remote import Remote
            r = Remote(sup.log, sup.store)
            sup.on_connect(r)  # before it subscribes: what comes meanwhile reaches it
            refused = not r.on_connect(link)
        except (LinkError, MemoryError) as e:  # closed while we subscribed; no room for remote
            link.close(graceful=False)
            sup._end_session()
            delay = sup._retry(CONNECT)
            sup.log.warn("connect", "%s; retrying in %d s", e, delay // 1000)
            return False
        if refused:
            link.close(graceful=False)
            sup._retry(CONNECT)
        elif sup._marker.is_sent(cfg, sup.creds):
            _enter_run(sup)
        else:
            sup._goto(ATTRIBUTES)
        return False  # accepted
    if rc in (2, 4, 5):
        # What to connect with next is decided in firmware/provision.py (loaded now, with
        # the session closed: not resident at the heap's high points); applied here.
        from firmware import provision
        try:
            decision, old = provision.fail(rc, creds, sup.creds, sup._rejected,
                                           sup._candidate is not None, sup.log)
        finally:
            del provision
            unload("provision")
        if decision == KEEP_WORKING:
            if old is not None:
                sup._keep_credentials(old)
            sup._goto(CONNECT)
            return sup._rejected
        if decision == REFUSED:
            delay = sup._retry(CONNECT if sup.creds else PROVISION, slow=True)
            sup.log.warn("connect", "retrying in %d min", delay // 60000)
            return sup._rejected
        # Back to provisioning after the backoff, never at once: a server that issues
        # credentials and then refuses them would otherwise get a round (and a credential
        # write) per main-loop step. Ready credentials (config.json, no provision_key):
        # nothing to provision with, only a technician can mend it; tried again slowly
        # (the platform may be mended meanwhile), never in a storm.
        ready = cfg["provision_key"] is None
        delay = sup._retry(CONNECT if ready else PROVISION, slow=ready)
        sup.log.error("connect", "credentials refused (CONNACK %d): device deleted or "
                                 "credentials changed on the platform; %s in %d s", rc,
                      "a technician must put the device's credentials in config.json; "
                      "retrying" if ready else "provisioning again", delay // 1000)
        return not ready  # provisioned again; ready credentials are only retried, slowly
    delay = sup._retry(CONNECT)
    sup.log.warn("connect", "server refused the session (CONNACK %d); retrying in %d s",
                 rc, delay // 1000)


def attributes(sup):
    cfg = sup.cfg
    sup.log.info("attributes", "sending %s=%s and %s=%s", cfg["attr_supplier_key"],
                 mask(cfg["supplier_key"]), cfg["attr_cups_key"], cfg["cups"])
    try:
        t = cfg.get("attributes_topic")  # the device profile's (docs/thingsboard.md §6)
        sup.link.publish(t.encode() if t else TOPIC, payload(cfg), 1)
    except LinkError as e:
        delay = sup._retry(CONNECT)
        sup.log.warn("attributes", "not acknowledged (%s); reconnecting in %d s",
                     e, delay // 1000)
        return
    # PUBACK received: only now is it safe to say "sent".
    sup._acknowledged()
    sup._marker.mark_sent(cfg, sup.creds)
    sup.log.info("attributes", "acknowledged")
    if sup._gesture is not None:
        # The request on flash is served. (The one in RAM, _reprovision, was served when
        # provisioning decided: while it is set the meter stays in wifi, time or provision.)
        sup._gesture.done()
    _enter_run(sup)


def _enter_run(sup):
    sup.pipeline.reporting(sup.creds)  # with them, the firmware report once (pipeline.py)
    sup._goto(RUN)
    # The topic named: on a profile with other topic filters ThingsBoard acknowledges and
    # drops every reading (docs/thingsboard.md §6), and this line is what shows it.
    sup.log.info("run", "reporting every %d s to %s; heap free %d", sup.pipeline.interval_s,
                 sup.pipeline.topic.decode(), sup.hal.mem_free())
