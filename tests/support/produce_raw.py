"""Produce records exactly as given, with confluent-kafka (librdkafka's Python
client, not Sluice's producer): shapes Sluice's own producer refuses, such as
header keys that are not UTF-8.

stdin: one JSON object per line, {"key": hex|null, "value": hex|null,
"headers": [[hex key, hex value|null], ...]}. Records go to partition 0 in
order; the script exits non-zero unless every one was acknowledged.
usage: produce_raw.py BROKERS TOPIC
"""
import json
import sys

from confluent_kafka import Producer


def b(v):
    return None if v is None else bytes.fromhex(v)


def main():
    brokers, topic = sys.argv[1], sys.argv[2]
    producer = Producer({
        "bootstrap.servers": brokers,
        "enable.idempotence": True,
        "message.max.bytes": 8 * 1024 * 1024,
        "linger.ms": 5,
    })
    failed = []

    def done(err, msg):
        if err is not None:
            failed.append(str(err))

    count = 0
    for line in sys.stdin:
        r = json.loads(line)
        headers = [(b(k), b(v)) for k, v in r.get("headers", [])]
        producer.produce(topic, key=b(r.get("key")), value=b(r.get("value")), partition=0,
                         headers=headers or None, on_delivery=done)
        producer.poll(0)
        count += 1
    left = producer.flush(60)
    if failed or left:
        sys.exit(f"produce_raw: {len(failed)} failed, {left} unacknowledged: {failed[:3]}")
    print(json.dumps({"event": "produced", "count": count}))


if __name__ == "__main__":
    main()
