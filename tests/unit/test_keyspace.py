"""Every Redis key builder's output, pinned for a sample tenant: these strings are data in Redis.

A change here orphans stored keys (events, key material, consent state, receipts): it needs a
migration, not just a new expected value. The old import paths are checked to be the same
functions, and the API key store to build no key name of its own.
"""

from __future__ import annotations

import fnmatch

from streams import keyspace as ks

T = "acme"

PINNED = {
    # t:{t}: the tenant's store
    ks.store_prefix(T): "t:{acme}:",
    ks.store_pattern(T): "t:{acme}:*",
    ks.event_key(T, "e1"): "t:{acme}:ev:e1",
    ks.subject_index(T, "u1"): "t:{acme}:subj:u1",
    ks.type_index(T, "order_placed"): "t:{acme}:type:order_placed",
    ks.time_index(T): "t:{acme}:time",
    # k:{t}: pipeline-only
    ks.pipeline_prefix(T): "k:{acme}:",
    ks.tenant_hash_key(T): "k:{acme}:tenant",
    ks.subject_key_name(T, "u1"): "k:{acme}:subj:u1",
    ks.check_key_name(T): "k:{acme}:check",
    ks.pseudonym_key(T): "k:{acme}:pseudonym",
    ks.consent_key(T, "p_1"): "k:{acme}:consent:p_1",
    ks.receipt_key(T, "r1"): "k:{acme}:receipt:r1",
    ks.requests_index(T): "k:{acme}:requests",
    ks.inflight_key(T): "k:{acme}:inflight",
    ks.stats_key(T): "k:{acme}:stats",
    ks.dlq_subject_key(T, "p_1"): "k:{acme}:dlqsubj:p_1",
    ks.parked_requests_key(T): "k:{acme}:parked",
    ks.redrive_guard_key(T, "e1"): "k:{acme}:redrive:e1",
    # tenancy:
    ks.TENANTS_KEY: "tenancy:tenants",
    ks.DELETED_KEY: "tenancy:deleted",
    ks.RECEIPTS_KEY: "tenancy:receipts",
    ks.deleted_marker(T): "tenancy:{acme}:deleted",
    # privacy:
    ks.PENDING_AOF_KEY: "privacy:pending-aof",
    ks.PARKED_TENANTS_KEY: "privacy:parked-tenants",
    ks.applied_key("streams.privacy-requests", 3): "privacy:applied:streams.privacy-requests:3",
    ks.request_reader_lease_key("streams.privacy-requests", 3): "privacy:lease:streams.privacy-requests:3",
    # k:dlq:
    ks.dlq_keys_key("streams.dlq"): "k:dlq:streams.dlq:keys",
    # audit:
    ks.audit_signer_key("main", "worker"): "audit:{main}:signer:worker",
    ks.audit_public_key("main"): "audit:{main}:pub",
    # api:
    ks.API_OPERATORS_SET: "api:operators",
    ks.api_key_hash_key("0123456789ab"): "api:key:0123456789ab",
    ks.api_tenant_set_key(T): "api:tenant:{acme}",
}


def test_every_builder_is_pinned():
    for got, want in PINNED.items():
        assert got == want


def test_every_public_builder_is_in_the_pinned_table():
    # A builder added to keyspace without a pinned output fails here.
    builders = {n for n, v in vars(ks).items() if not n.startswith("_") and (callable(v) or isinstance(v, str))}
    pinned_sources = {"store_prefix", "store_pattern", "event_key", "subject_index", "type_index", "time_index",
                      "pipeline_prefix", "tenant_hash_key", "subject_key_name", "check_key_name", "pseudonym_key",
                      "consent_key", "receipt_key", "requests_index", "inflight_key", "stats_key", "dlq_subject_key",
                      "parked_requests_key", "PARKED_TENANTS_KEY", "redrive_guard_key",
                      "TENANTS_KEY", "DELETED_KEY", "RECEIPTS_KEY", "deleted_marker", "PENDING_AOF_KEY",
                      "applied_key", "request_reader_lease_key", "dlq_keys_key", "audit_signer_key", "audit_public_key",
                      "API_OPERATORS_SET", "API_KEY_PREFIX", "api_key_hash_key", "api_tenant_set_key"}
    assert builders == pinned_sources


def test_tenant_keys_share_the_tenants_hash_tag():
    # Redis Cluster hashes the first {...}: a tenant's store, key material and deletion marker share a slot.
    for key in (ks.event_key(T, "e"), ks.subject_key_name(T, "u"), ks.stats_key(T), ks.deleted_marker(T),
                ks.consent_key(T, "p"), ks.inflight_key(T), ks.api_tenant_set_key(T)):
        assert key[key.index("{") + 1:key.index("}")] == T


def test_only_the_store_is_under_the_tenant_acl_pattern():
    pattern = ks.store_pattern(T)
    assert fnmatch.fnmatchcase(ks.event_key(T, "e"), pattern)
    for key in (ks.subject_key_name(T, "u"), ks.check_key_name(T), ks.pseudonym_key(T), ks.stats_key(T),
                ks.deleted_marker(T), ks.event_key("acme2", "e"), ks.event_key("acm", "e")):
        assert not fnmatch.fnmatchcase(key, pattern)


def test_old_import_paths_are_the_same_builders():
    from streams.audit import keys as audit_keys
    from streams.consent import store as consent_store
    from streams.erasure import fence as inflight
    from streams.dlq import keys as dlq_keys, subjects
    from streams.privacy import keys
    from streams.sinks import store, store_keys
    from streams.tenancy import registry

    assert keys.pipeline_prefix is ks.pipeline_prefix and keys.subject_key_name is ks.subject_key_name
    assert keys.tenant_hash_key is ks.tenant_hash_key and keys.check_key_name is ks.check_key_name
    assert store_keys.store_prefix is ks.store_prefix and store_keys.event_key is ks.event_key
    assert not hasattr(store_keys, "tenant_prefix") and not hasattr(keys, "key_prefix")  # the old names are gone
    assert store.stats_key is ks.stats_key
    assert consent_store.consent_key is ks.consent_key and consent_store.applied_key is ks.applied_key
    assert inflight.inflight_key is ks.inflight_key
    assert subjects.mapping_key is ks.dlq_subject_key and dlq_keys.redis_key is ks.dlq_keys_key
    assert audit_keys.signer_key is ks.audit_signer_key and audit_keys.public_key is ks.audit_public_key
    assert registry.deleted_marker is ks.deleted_marker and registry.TENANTS_KEY == ks.TENANTS_KEY


def test_the_api_key_store_builds_no_key_of_its_own():
    # api/api_keys.py built its key names itself until they moved here: it uses the builders above
    # and has no key string of its own outside its docstring's layout table.
    import ast
    import inspect

    from streams.api import api_keys
    from streams.erasure import executor

    assert executor.PENDING_AOF is ks.PENDING_AOF_KEY
    assert api_keys.api_key_hash_key is ks.api_key_hash_key and api_keys.api_tenant_set_key is ks.api_tenant_set_key
    assert api_keys.API_OPERATORS_SET is ks.API_OPERATORS_SET and api_keys.API_KEY_PREFIX is ks.API_KEY_PREFIX
    tree = ast.parse(inspect.getsource(api_keys))
    doc = ast.get_docstring(tree, clean=False)
    literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                and n.value != doc and n.value.startswith("api:")]
    assert not literals, literals


def _key_patterns(rules: tuple[str, ...] | list[str]) -> list[str]:
    return [r.split("~", 1)[1] for r in rules if "~" in r]


def test_acl_patterns_grant_what_the_docstring_says():
    # Redis ACL globs follow fnmatch's rules for these patterns ({ and } are literal in both).
    from streams.tenancy.onboarding import redis_acl_rules
    from streams.tenancy.principals import ROLES

    def readable(patterns: list[str], key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, p) for p in patterns)

    material = [ks.tenant_hash_key(T), ks.subject_key_name(T, "u"), ks.check_key_name(T), ks.pseudonym_key(T),
                ks.consent_key(T, "p"), ks.dlq_subject_key(T, "p"), ks.audit_signer_key("main", "w"),
                ks.api_key_hash_key("0123456789ab"), ks.dlq_keys_key("streams.dlq")]
    tenant = _key_patterns(redis_acl_rules(T))
    assert tenant == [ks.store_pattern(T)]
    officer = _key_patterns(ROLES["privacy-officer"].redis_rules)
    for key in (ks.TENANTS_KEY, ks.DELETED_KEY, ks.receipt_key(T, "r"), ks.requests_index(T), ks.stats_key(T)):
        assert readable(officer, key) and not readable(tenant, key)
    auditor = _key_patterns(ROLES["auditor"].redis_rules)
    assert readable(auditor, ks.audit_public_key("main"))
    for key in material + [ks.event_key(T, "e")]:
        assert not readable(officer, key) and not readable(auditor, key)
    for key in material:
        assert not readable(tenant, key)


def test_staff_patterns_are_pinned():
    # Built from the keyspace's builders with "*" for the tenant: the same strings as before.
    from streams.tenancy.principals import ROLES

    assert _key_patterns(ROLES["privacy-officer"].redis_rules) == [
        "tenancy:tenants", "tenancy:deleted", "k:{*}:receipt:*", "k:{*}:requests", "k:{*}:stats"]
    assert _key_patterns(ROLES["auditor"].redis_rules) == ["audit:{*}:pub"]
