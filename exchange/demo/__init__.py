"""``kpx demo``: a private simulated region on real KP figures, with seeded anomalies.

Modules: ``traffic`` and ``anomalies`` (the pure, seeded plan), ``timeline`` (which dates the
plan uses, so that the as-of reconciliation sees exactly the seeded findings), ``setup`` (the
private region), ``processes`` (the services as real processes), ``driver`` (submitting the
plan on schedule), ``monitor`` (counts for the live view), ``report`` (rich output) and
``commands`` (the click command, the demo's composition root).
"""
