"""A subject's consent: its state and the decision it gives for an event (``state``), the gate on
the ingest path (``gate``), the privacy requests officers file (``requests``), their state, applied
offsets and receipts in Redis (``store``) and a tenant's compliance report (``report``). It decides
and records; it must not carry a request out or erase anything: ``streams.erasure`` does.
"""
