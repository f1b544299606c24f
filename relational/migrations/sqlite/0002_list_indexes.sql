-- Indexes for the sort orders of lists (docs/side-store.md, "The HTTP API"). Filtered lists
-- in id order use the single-column indexes of 0001: in SQLite each entry ends with the
-- rowid (= id), so `WHERE status = ? ORDER BY id DESC` reads the index in order.
-- The rank expressions are exactly those of relational/src/list.rs.
CREATE INDEX tickets_priority_rank ON tickets (
    (CAST(CASE priority WHEN 'low' THEN 0 WHEN 'medium' THEN 1 WHEN 'high' THEN 2 ELSE 3 END AS BIGINT)), id);
CREATE INDEX alerts_severity_rank ON alerts (
    (CAST(CASE severity WHEN 'INFO' THEN 0 WHEN 'WARNING' THEN 1 ELSE 2 END AS BIGINT)), id);
CREATE INDEX tickets_updated_at ON tickets (updated_at, id);
CREATE INDEX cases_updated_at ON cases (updated_at, id);

-- Ticket numbers (VIG-000042) are set by the database as the row is inserted with an
-- empty number, so that creating a ticket is one statement.
CREATE TRIGGER tickets_number AFTER INSERT ON tickets WHEN NEW.ticket_number = ''
BEGIN
    UPDATE tickets SET ticket_number = 'VIG-' || printf('%06d', NEW.id) WHERE id = NEW.id;
END;
