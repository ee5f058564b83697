"""Attack tests: each promise of DESIGN decision 8 attacked with plain clients against the real stack.

Every test asserts the refusal and that nothing changed (no key made, no request filed, no
metrics body returned). Marked ``security`` (and ``e2e``: they run worker processes).
"""
