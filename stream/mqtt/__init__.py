"""The MQTT bridge: ``bridge`` (the connection, on its own thread and loop), ``client`` (an aiomqtt
client that owns its socket), ``loop_thread`` (that thread), ``outbox`` (what is still to publish),
``codec`` (topics and payloads) and ``feeds`` (input applied to the hub). docs/broadcast.md."""
