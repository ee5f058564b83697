"""Carrying out privacy requests, erasure above all: ``reader`` reads ``privacy.requests`` and hands
each request to ``executor``, which records the consent change and, for an erasure, reaches every
copy of the subject (every sink, the subject key, the DLQ's way back, Redis' files via ``aof``)
before it writes a receipt and an audit record; ``fence`` waits out other workers' batches in flight.
It owns the order of the erasure steps and their receipt; it must not know a sink's storage (a
sink erases its own copy through ``streams.sinks.base.Sink.erase_subject``) nor decide consent
(``streams.consent.state`` does).
"""
