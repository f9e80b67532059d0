-- Where the registry's log holds each accepted event (DESIGN §12): the leaf index a batched
-- RegistryDecisions carries. `kpx node audit` proves inclusion from the log's public tiles
-- at this index instead of asking the registry where the event is. NULL for a rejected event,
-- and for one accepted before this column or by a single RegistryDecision (it has no index):
-- the audit finds those by reading the log's entry bundles and stores the index it proved.
ALTER TABLE node_events ADD COLUMN IF NOT EXISTS leaf_index bigint;
