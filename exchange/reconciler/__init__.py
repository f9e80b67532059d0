"""The reconciler: a projection of accepted events, event-time and as-of checks, statistics.

Modules: ``store`` (the ``recon`` projection and discrepancies), ``asof`` (the set-based
``reconcile --as-of`` checks), ``figures`` (KP statistics aggregates and versions),
``service`` (the consumer and relay of ``kpx reconciler run``), ``commands`` (click commands).
"""
