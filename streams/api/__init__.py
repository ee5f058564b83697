"""The tenant data access API over HTTP: hashed API keys with roles, pure request handling, OpenAPI, Faust pages.

``api_keys`` (keys in Redis), ``service`` (``DataApi``: auth, validation,
queries, detokenize; no web framework), ``control`` (the tenant management
routes for operator keys, on the same tenant service as ``streams tenants``),
``openapi`` (the document, generated from the same route table),
``faust_views`` (the thin aiohttp adapter on the worker's web server).
"""
