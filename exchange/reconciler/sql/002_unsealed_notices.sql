-- The DiscrepancyRaised notices of `kpx reconcile --as-of` runs not sealed into the outbox yet.
-- A run's transaction writes one row per discrepancy it raised, in the same commit as the
-- discrepancy, and seals nothing: signing tens of thousands of notices inside that transaction
-- made it long. Each sealing chunk then deletes its rows in the transaction that appends their
-- outbox rows, so a crash at any point leaves every notice either still marked or sealed, never
-- both and never neither; the command after its commit and the running service both seal what
-- is left.
CREATE TABLE IF NOT EXISTS recon.unsealed_notices (
    discrepancy_id bigint PRIMARY KEY REFERENCES recon.discrepancies (id)
);
