"""Read a tenant's clean stream with nothing but confluent-kafka, fastavro and schemas/clean/<type>/v<N>.avsc.

    python examples/consume_tenant_stream.py --bootstrap 127.0.0.1:9092 --tenant acme --schemas schemas/clean

Records are Avro single-object encoded (Avro spec): 0xC3 0x01, the writer
schema's 8-byte CRC-64-AVRO fingerprint (little-endian), then the Avro body.
Keys are "<subject id>/<event id>" (a subject's events share a partition, in
order); a record with a null value is a tombstone (erasure): drop the event with
that key. The topic is compacted, so an erased event also leaves the broker.
Consumers de-duplicate by event_id (delivery is at least once).

Every published version of a clean schema is kept: a record is read with the
version it was written with (its fingerprint) and resolved to the latest
version of its type you have (Avro schema resolution), so records from before
and after a schema change come out in one shape. An unknown fingerprint is a
version newer than your files: fetch the new schemas/clean/.
"""

import argparse
import glob
import io
import json

import fastavro
from confluent_kafka import Consumer
from fastavro.schema import fingerprint, to_parsing_canonical_form


def _version(path):
    """(event type, N) of ".../<event type>/v<N>.avsc"."""
    event_type, name = path.replace("\\", "/").rsplit("/", 2)[1:]
    return event_type, int(name[1:-len(".avsc")])


def load_schemas(folder):
    """Writer schemas by fingerprint (every version) and the latest version by record name."""
    by_fp, latest = {}, {}
    for path in sorted(glob.glob(f"{folder}/*/v*.avsc"), key=_version):  # oldest first, per type
        with open(path) as f:
            parsed = fastavro.parse_schema(json.load(f))
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
        by_fp[fp] = parsed
        latest[parsed["name"]] = parsed
    return by_fp, latest


def decode(schemas, value):
    by_fp, latest = schemas
    if value[:2] != b"\xc3\x01":
        raise ValueError("not Avro single-object encoded")
    writer = by_fp[value[2:10]]  # KeyError: a version newer than your files
    reader = latest[writer["name"]]
    return reader["name"], fastavro.schemaless_reader(io.BytesIO(value[10:]), writer, reader)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--schemas", default="schemas/clean")
    ap.add_argument("--group", default=None)
    ap.add_argument("--max", type=int, default=None)
    ap.add_argument("--idle-timeout", type=float, default=10.0)
    args = ap.parse_args()

    schemas = load_schemas(args.schemas)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group or f"{args.tenant}-example-reader",
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([f"tenant.{args.tenant}.events"])
    seen, idle = 0, 0.0
    try:
        while args.max is None or seen < args.max:
            msg = consumer.poll(0.5)
            if msg is None:
                idle += 0.5
                if idle >= args.idle_timeout:
                    break
                continue
            idle = 0.0
            if msg.error():
                raise SystemExit(f"kafka error: {msg.error()}")
            if msg.value() is None:
                subject, _, event_id = msg.key().decode().partition("/")
                headers = dict(msg.headers() or [])
                print(json.dumps({"tombstone": {"subject": subject, "event_id": event_id,
                                                "reason": headers.get("reason", b"").decode()}}))
            else:
                name, event = decode(schemas, msg.value())
                print(json.dumps({"schema": name, "event": event}, default=str))
            seen += 1
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
