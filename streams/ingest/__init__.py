"""The event path of the worker: one raw record to one outcome (``processor``), a batch through
consent, transforms and every sink in order before its offsets are acknowledged (``batch``), fair
shares among tenants (``fairness``), the tenants' own raw topics (``tenant_raw``), deleting raw
events once processed (``raw_pruning``), and the publishers' producer helper and sample events. It
orders the steps; it must not store a copy itself (``streams.sinks`` do) nor decide consent
(``streams.consent``), and no event may reach a sink before its consent decision.
"""
