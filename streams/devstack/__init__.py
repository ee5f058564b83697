"""The local Kafka and Redis of development, tests, benchmarks and the demo (``streams stack``):
fetches Kafka's jars with Maven, runs the broker on Java and a ``redis-server``, by pid file.
It owns only that harness; the pipeline must not import it (a deployment brings its own broker
and Redis, ``deploy/``), and it must not hold pipeline logic: its broker and Redis settings are
the ones ``deploy/`` mirrors (``tests/unit/test_deploy_config.py`` compares them).
"""
