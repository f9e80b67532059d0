"""The registry's transparency log, as pure code (DESIGN §12): no I/O here.

- :mod:`.tree`: RFC 6962 / RFC 9162 §2.1 hashing and the stored-hash index of golang/mod's
  ``sumdb/tlog``: every complete subtree hash is stored once, so appending a leaf computes only
  the hashes it completes and never re-reads the tree.
- :mod:`.proof`: inclusion and consistency proofs (RFC 9162 §2.1.3–2.1.4) and their checks.
- :mod:`.note`: C2SP ``signed-note`` with Ed25519 keys and verifier key strings.
- :mod:`.checkpoint`: C2SP ``tlog-checkpoint`` bodies and ``tlog-cosignature`` lines.
- :mod:`.tile`: C2SP ``tlog-tiles`` paths and the stored hashes a tile holds.
"""
