"""A privacy-first multi-tenant event pipeline on Kafka, Faust and Redis (README "Architecture").
The top-level modules are the worker's wiring (``app``, ``runtime``) and the bottom layer every
package may import (``records``: the outcome types; ``errors``: the root error; ``settings``;
``keyspace``: every Redis key), with ``connections`` one layer up (every Redis and Kafka client,
built from the settings); the bottom layer must not import anything above it
(``tests/unit/test_import_graph.py``), and no package may import ``streams.devstack`` outside the
CLI, tests and benchmarks.
"""
