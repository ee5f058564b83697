"""Plumbing the worker and the CLI share: the topics the project declares and their creation
(``topics``), holding back while a dependency is down (``retry``), Prometheus counters (``metrics``)
and named fault points for tests (``failpoints``). It must not hold pipeline rules; the clients are
built in ``streams.connections`` and the local development stack is ``streams.devstack``, not here.
"""
