-- Indexes for the sort orders of lists (docs/side-store.md, "The HTTP API"), the same as
-- SQLite's 0002, plus (column, id) pairs: PostgreSQL index entries are not in id order
-- for equal keys, as SQLite's (which end with the rowid) are.
-- The rank expressions are exactly those of relational/src/list.rs.
CREATE INDEX tickets_priority_rank ON tickets (
    (CAST(CASE priority WHEN 'low' THEN 0 WHEN 'medium' THEN 1 WHEN 'high' THEN 2 ELSE 3 END AS BIGINT)), id);
CREATE INDEX alerts_severity_rank ON alerts (
    (CAST(CASE severity WHEN 'INFO' THEN 0 WHEN 'WARNING' THEN 1 ELSE 2 END AS BIGINT)), id);
CREATE INDEX tickets_updated_at ON tickets (updated_at, id);
CREATE INDEX cases_updated_at ON cases (updated_at, id);
CREATE INDEX tickets_status_id ON tickets (status, id);
CREATE INDEX tickets_priority_id ON tickets (priority, id);
CREATE INDEX tickets_assignee_id ON tickets (assignee_id, id);
CREATE INDEX tickets_system_id ON tickets (system_id, id);
CREATE INDEX alerts_status_id ON alerts (status, id);
CREATE INDEX alerts_severity_id ON alerts (severity, id);
CREATE INDEX alerts_system_id ON alerts (system_id, id);
CREATE INDEX cases_status_id ON cases (status, id);
CREATE INDEX cases_assigned_to_id ON cases (assigned_to, id);
CREATE INDEX audit_log_actor_id ON audit_log (actor, id);
CREATE INDEX audit_log_action_id ON audit_log (action, id);
CREATE INDEX audit_log_target_id ON audit_log (target_type, target_id, id);

-- Ticket numbers (VIG-000042) are set by the database as the row is inserted with an
-- empty number, so that creating a ticket is one statement.
CREATE FUNCTION tickets_number() RETURNS trigger AS $$
BEGIN
    IF NEW.ticket_number = '' THEN
        NEW.ticket_number := 'VIG-' || CASE WHEN NEW.id < 1000000
            THEN lpad(NEW.id::text, 6, '0') ELSE NEW.id::text END;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER tickets_number BEFORE INSERT ON tickets
    FOR EACH ROW EXECUTE FUNCTION tickets_number();
