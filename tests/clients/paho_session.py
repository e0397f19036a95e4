"""A device with a persistent MQTT session, driven by Eclipse Paho's Python client (paho-mqtt).

    paho_session.py subscribe --port P --token T --device D --user U --version 3|5
        connects keeping its session, subscribes to u/U/inbox at QoS 1, disconnects.
    paho_session.py receive --port P --token T --device D --user U --version 3|5 --count N
        connects again keeping its session and sends nothing else: prints, as one JSON line,
        whether the session was present and the seqs of the first N inbox messages received.

Used by tests/tests/paho_clients.rs.
"""

import argparse
import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def client(args):
    version = mqtt.MQTTv5 if args.version == 5 else mqtt.MQTTv311
    kwargs = {} if version == mqtt.MQTTv5 else {"clean_session": False}
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=args.device,
        protocol=version,
        **kwargs,
    )
    c.username_pw_set("device", args.token)
    return c


def connect(c, args):
    connected = threading.Event()
    state = {}

    def on_connect(_client, _userdata, flags, reason_code, _properties):
        state["present"] = bool(flags.session_present)
        state["code"] = str(reason_code)
        connected.set()

    c.on_connect = on_connect
    if args.version == 5:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", args.port, clean_start=False, properties=properties)
    else:
        c.connect("127.0.0.1", args.port)
    c.loop_start()
    if not connected.wait(10):
        sys.exit("no CONNACK")
    if state["code"] != "Success":
        sys.exit(f"refused: {state['code']}")
    return state["present"]


def subscribe(args):
    c = client(args)
    connect(c, args)
    subscribed = threading.Event()
    c.on_subscribe = lambda *_: subscribed.set()
    c.subscribe(f"u/{args.user}/inbox", qos=1)
    if not subscribed.wait(10):
        sys.exit("no SUBACK")
    c.disconnect()
    c.loop_stop()


def receive(args):
    c = client(args)
    seqs = []
    done = threading.Event()
    topic = f"u/{args.user}/inbox"

    def on_message(_client, _userdata, message):
        if message.topic == topic:
            seqs.append(json.loads(message.payload)["seq"])
            if len(seqs) >= args.count:
                done.set()

    c.on_message = on_message
    present = connect(c, args)
    done.wait(args.timeout)
    c.disconnect()
    c.loop_stop()
    print(json.dumps({"session_present": present, "seqs": seqs}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["subscribe", "receive"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--version", type=int, choices=[3, 5], required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    {"subscribe": subscribe, "receive": receive}[args.action](args)


if __name__ == "__main__":
    main()
