"""Protecting personal data: the key hierarchy behind tokens and crypto-shredding (``keys``: a
destroyed subject key makes every token of that subject irreversible), the policy read from schema
annotations and the transforms that apply it (``policy``, ``transforms``), whether a schema change
weakens a field's treatment (``weakening``), pseudonyms, the PII lint, audited key rotation and detokenization. An original value must not leave it except through
``detokenize`` (authorized, audited first), and it must not write events anywhere.
"""
