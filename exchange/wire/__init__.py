"""The wire protocol both sides share.

Avro codec, schema compatibility, envelopes, signing, broker topology.
"""
