"""The ``streams`` command line: one module per command group, each registering its subcommand
(``base``), and ``main`` to dispatch and turn library errors into one-line messages. A command
parses, calls the library and prints; it must not hold a rule of its own (a rule the HTTP API needs
too belongs in the library, as ``streams.tenancy.api_key_admin`` does for API keys).
"""
