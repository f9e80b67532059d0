-- Issue 11, item 4: shipments the registry withdrew (ShipmentCancelled, DESIGN §4) because the
-- announced certificate was voided or replaced. A table of its own, not a flag on
-- expected_shipments, so a cancellation that overtakes its announcement still withdraws it.
CREATE TABLE IF NOT EXISTS cancelled_shipments (
    certificate_id      text PRIMARY KEY,
    issuing_participant text NOT NULL,
    voided_on           date NOT NULL,
    reason              text NOT NULL,
    replaced_by         text,
    cancelled_at        timestamptz NOT NULL
);
