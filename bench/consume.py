# The tutorial's consumer (../shared/seed: kafka-python + pymongo, insert_one
# per message), as the end-to-end benchmark runs it (scripts/bench). Two changes
# from the tutorial's text, both needed for it to run at all: the collection
# variable is used under the name it was given (`my_collection`; the tutorial
# writes `collection`), and the confirmation line is formatted (the tutorial
# adds a dict to a str, a TypeError). Topic, group, collection and addresses
# come from the environment so the benchmark can give it fresh ones.
import os
from json import loads
from kafka import KafkaConsumer
from pymongo import MongoClient

my_consumer = KafkaConsumer(
    os.environ.get('BENCH_TOPIC', 'testnum'),
    bootstrap_servers=[os.environ.get('BENCH_BROKERS', 'localhost:9092')],
    auto_offset_reset='earliest',
    enable_auto_commit=True,
    auto_commit_interval_ms=1000,
    group_id=os.environ.get('BENCH_GROUP', 'my-group'),
    value_deserializer=lambda x: loads(x.decode('utf-8'))
)

my_client = MongoClient(os.environ.get('BENCH_MONGO', 'mongodb://localhost:27017'))
my_collection = my_client[os.environ.get('BENCH_DATABASE', 'testnum')][os.environ.get('BENCH_COLLECTION', 'testnum')]

for message in my_consumer:
    message = message.value
    my_collection.insert_one(message)
    print(str(message) + " added to " + str(my_collection.full_name))
