"""Every copy of a clean event: the ``Sink`` interface with its write order and erasure contract
(``base``), the tenant topics (``tenant_topic``, over ``kafka_sink``), the Redis store and its key
layout (``store``, ``store_keys``) and the configured list (``registry``). A sink must say how it
erases a subject and drops a tenant, and a clean event must not be copied outside a registered
sink, or an erasure would miss that copy.
"""
