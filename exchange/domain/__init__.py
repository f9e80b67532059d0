"""Pure domain code, no I/O.

Certificates, numbers, events, rules, the region, discrepancy rules, statistics rows.
"""
