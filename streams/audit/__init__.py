"""The audit trail: signed, hash-chained records of every privileged act (privacy requests,
detokenization, key rotation, tenant and API key changes), written synchronously to the audit
topic (``log``) and verifiable with the published keys (``chain``, ``signing``, ``keys``). It owns
the record format, the chain and the signing keys; it must never hold a subject id or a value in
the clear (pseudonyms only), and it does not decide what is audited: its callers do, before they act.
"""
