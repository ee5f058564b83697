"""Plumbing the worker and the CLI share: the topics the project declares and their creation
(``topics``), holding back while a dependency is down (``retry``), the metrics (every one declared in
``metric_catalogue``; ``metrics`` the prometheus_client facade; ``health`` lag, backlog and readiness)
and named fault points for tests (``failpoints``). It must not hold pipeline rules; the clients are
built in ``streams.connections`` and the local development stack is ``streams.devstack``, not here.
"""
