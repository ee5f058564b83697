"""Tenants as the control plane sees them: valid names (``names``), the registry in Redis
(``registry``), onboarding, rotation and deletion (``onboarding``), broker SCRAM users and Redis
ACLs (``credentials``), quotas, the staff principals and audited API key administration. It must
not process events, and a tenant's credentials must reach only that tenant's topics and keys.
"""
