"""Schemas and the wire format: the registry of every ``.avsc`` version by fingerprint (``registry``),
the Avro single-object codec that reads any kept version as the latest (``codec``), JSON validated
against the same schemas (``json_datum``), the clean schema derived from each raw version
(``clean``), and the schema evolution rules with the versions at a git ref (``compat``,
``history``; the privacy rule among them asks ``streams.privacy.weakening``). It validates and
encodes; it must not decide what happens to a field's value (``streams.privacy.policy`` does), and
its errors must never quote a value.
"""
