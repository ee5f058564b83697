"""Schemas and the wire format: the ``.avsc`` registry by fingerprint (``registry``), the Avro
single-object codec (``codec``), JSON validated against the same schemas (``json_datum``) and the
clean schema derived from each raw one (``clean``). It validates and encodes; it must not decide
what happens to a field's value (``streams.privacy.policy`` does), and its errors must never
quote a value.
"""
