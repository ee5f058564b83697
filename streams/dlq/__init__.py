"""The dead-letter queue: the closed set of reasons (``reasons``), the record saying why and where
an event was rejected (``record``), the HMAC key behind its fingerprints (``keys``) and the audited
way from a pseudonym back to a subject (``subjects``). A DLQ record must never carry a payload, a
value or a subject id in the clear: keyed fingerprints and pseudonyms only.
"""
