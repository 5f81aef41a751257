"""The broker's own tail latency on a topic, with no prodcat in the path.

A bare librdkafka consumer (confluent-kafka) assigned to the end of TOPIC reads back N records a
producer writes at RATE/s (linger 20 ms, as the soak's feeder), and prints p50/p99 of produce ->
read. Run it on the soak's input topic after a soak and on a fresh topic (created when missing):
the difference is what the log's length costs on this broker.

    pip install confluent-kafka
    python3 bench/broker_tail.py 127.0.0.1:19092 soak-in-<stamp> 4000 400
    python3 bench/broker_tail.py 127.0.0.1:19092 probe-fresh 4000 400
"""
import sys, time, json, threading
from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_END
from confluent_kafka.admin import AdminClient, NewTopic
brokers, topic, n, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
admin = AdminClient({'bootstrap.servers': brokers})
md = admin.list_topics(timeout=10)
if topic not in md.topics:
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(); time.sleep(1)
    md = admin.list_topics(timeout=10)
parts = list(md.topics[topic].partitions)
c = Consumer({'bootstrap.servers': brokers, 'group.id': 'probe-%d' % time.time(), 'fetch.wait.max.ms': 100, 'enable.auto.commit': False})
c.assign([TopicPartition(topic, p, OFFSET_END) for p in parts])
for _ in range(20): c.poll(0.1)
p = Producer({'bootstrap.servers': brokers, 'linger.ms': 20})
marker = 'probe-%d' % time.time()
def feed():
    t0 = time.time()
    for i in range(n):
        due = t0 + i / rate
        while time.time() < due: time.sleep(0.0005); p.poll(0)
        p.produce(topic, key=str(i), value=json.dumps({'id': f'{marker}-{i}', 'title': 'probe', 'sent': time.time()}))
    p.flush(30)
th = threading.Thread(target=feed); th.start()
lat = []; deadline = time.time() + n / rate + 60
while len(lat) < n and time.time() < deadline:
    m = c.poll(0.1)
    if m is None or m.error(): continue
    try: v = json.loads(m.value())
    except Exception: continue
    if str(v.get('id', '')).startswith(marker): lat.append(1e3 * (time.time() - v['sent']))
th.join(); lat.sort()
q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] if lat else float('nan')
print(f'{topic}: {len(lat)}/{n} read, p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms')
