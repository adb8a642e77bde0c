"""Command line: python -m tbsim [options]; prints one ready line, runs until SIGTERM/SIGINT."""
import argparse
import logging
import signal
import sys
import threading

from .ratelimits import PLANS
from .sim import TBSim
from .store import ALLOW_CREATE, CHECK_PRE_PROVISIONED, Profile, mask


def _profile(text):
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError("expected KEY:SECRET[:allow-create|:check-pre-provisioned]")
    strategy = parts[2] if len(parts) == 3 else ALLOW_CREATE
    if strategy not in (ALLOW_CREATE, CHECK_PRE_PROVISIONED):
        raise argparse.ArgumentTypeError(f"unknown strategy {strategy!r}")
    return parts[0], parts[1], strategy


def _device(text):
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError("expected NAME:TOKEN[:PROFILEKEY]")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def build_parser():
    p = argparse.ArgumentParser(prog="python -m tbsim",
                                description="ThingsBoard-compatible MQTT device endpoint for tests and local runs.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--mqtt-port", type=int, default=1883, help="plain MQTT port, 0 = any free port (default 1883)")
    p.add_argument("--http-port", type=int, default=8080, help="HTTP admin API port, 0 = any free port (default 8080)")
    p.add_argument("--mqtts-port", type=int, default=None, help="MQTT over TLS port (needs --cert and --key)")
    p.add_argument("--coap-port", type=int, default=5683,
                   help="CoAP (UDP) port for provisioning and device data, 0 = any free port, -1 = off (default 5683)")
    p.add_argument("--cert", help="server certificate chain (PEM) for --mqtts-port")
    p.add_argument("--key", help="server private key (PEM) for --mqtts-port")
    p.add_argument("--profile", action="append", type=_profile, default=[], metavar="KEY:SECRET[:STRATEGY]",
                   help="device profile with provisioning; STRATEGY allow-create (default) or "
                        "check-pre-provisioned; repeatable")
    p.add_argument("--device", action="append", type=_device, default=[], metavar="NAME:TOKEN[:PROFILEKEY]",
                   help="pre-provisioned device with an access token; repeatable")
    p.add_argument("--rate-limits", choices=["off"] + sorted(PLANS), default="off",
                   help="per-device ThingsBoard Cloud plan limits (default off)")
    p.add_argument("--puback-on-validation-failure", action="store_true",
                   help="profile option: answer invalid PUBLISHes with PUBACK instead of closing")
    p.add_argument("--telemetry-topic", metavar="FILTER",
                   help="profile option (all --profile profiles): custom telemetry topic filter")
    p.add_argument("--attributes-topic", metavar="FILTER",
                   help="profile option (all --profile profiles): custom attributes publish topic filter")
    p.add_argument("--attributes-subscribe-topic", metavar="FILTER",
                   help="profile option (all --profile profiles): custom attributes subscribe topic filter")
    p.add_argument("--provisioning", choices=["tb", "success-then-refuse"], default="tb",
                   help="tb: as ThingsBoard; success-then-refuse: answer SUCCESS, then refuse the issued "
                        "credentials with CONNACK 5 (a broken server, for storm tests)")
    p.add_argument("--provision-delay-s", type=float, default=0.0,
                   help="fault knob: delay every provisioning answer (all transports)")
    p.add_argument("--state-file", help="JSON file to load state from at start and save to at exit")
    p.add_argument("--provision-close-s", type=float, default=60.0,
                   help="close a provisioning connection this long after the reply (default 60)")
    p.add_argument("--inactivity-timeout-s", type=float, default=600.0,
                   help="close a session without activity after this long (default 600, ThingsBoard's "
                        "transport.sessions.inactivity_timeout)")
    p.add_argument("--provision-subscribe", choices=["grant", "refuse", "ignore"], default="grant",
                   help="SUBSCRIBE in provision sessions: grant (TB >= 3.9), refuse (3.5-3.8), ignore (<= 3.4)")
    p.add_argument("--connect-timeout-s", type=float, default=10.0,
                   help="close a connection that sends no complete CONNECT within this time (default 10)")
    p.add_argument("--connack-delay-s", type=float, default=0.0, help="fault knob: delay every CONNACK")
    p.add_argument("--tls-handshake-delay-s", type=float, default=0.0, help="fault knob: delay every TLS handshake")
    p.add_argument("--log-level", default="INFO", help="logging level on stderr (default INFO)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.mqtts_port is not None and not (args.cert and args.key):
        build_parser().error("--mqtts-port needs --cert and --key")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("tbsim")
    try:
        profiles = [Profile(key, secret, strategy, args.puback_on_validation_failure,
                            telemetry_topic=args.telemetry_topic, attributes_topic=args.attributes_topic,
                            attributes_subscribe_topic=args.attributes_subscribe_topic)
                    for key, secret, strategy in args.profile]
    except ValueError as e:
        build_parser().error(str(e))
    sim = TBSim(profiles=profiles, rate_limits=args.rate_limits, state_file=args.state_file, host=args.host,
                mqtt_port=args.mqtt_port, http_port=args.http_port, mqtts_port=args.mqtts_port,
                certfile=args.cert, keyfile=args.key, provision_close_s=args.provision_close_s,
                inactivity_timeout_s=args.inactivity_timeout_s, provision_subscribe=args.provision_subscribe,
                tls_handshake_delay_s=args.tls_handshake_delay_s, connack_delay_s=args.connack_delay_s,
                connect_timeout_s=args.connect_timeout_s,
                puback_on_validation_failure=args.puback_on_validation_failure,
                coap_port=None if args.coap_port < 0 else args.coap_port, provisioning=args.provisioning,
                provision_delay_s=args.provision_delay_s)
    for name, token, profile_key in args.device:
        if sim.device(name) is not None:
            log.info("device %r already in the state file; --device ignored", name)
            continue
        try:
            sim.add_device(name, profile_key, token=token)
            log.info("pre-provisioned device %r with token %s", name, mask(token))
        except ValueError as e:
            log.error("--device %s: %s", name, e)
            return 2

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    sim.start()
    line = f"tbsim listening mqtt={args.host}:{sim.mqtt_port} http={args.host}:{sim.http_port}"
    if sim.mqtts_port is not None:
        line += f" mqtts={args.host}:{sim.mqtts_port}"
    if sim.coap_port is not None:
        line += f" coap={args.host}:{sim.coap_port}"
    print(line, flush=True)
    while not stop.wait(0.5):
        if not sim.running:
            log.error("server thread ended unexpectedly")
            return 1
    sim.stop()                       # also saves --state-file
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
