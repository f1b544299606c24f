-- Vigil side store, SQLite. The PostgreSQL migration of the same number creates the same
-- tables, columns, constraints and indexes with that database's types.
-- Times are UTC (sqlx stores them as RFC 3339 text here); JSON columns hold JSON text.

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    display_name TEXT,
    hashed_password TEXT NOT NULL,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE roles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);

CREATE TABLE user_roles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    UNIQUE (user_id, role_id)
);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'analyst', 'viewer', 'auditor', 'agent')),
    expires_at TEXT,
    last_used_at TEXT,
    revoked_at TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    is_archived BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE systems (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hostname TEXT NOT NULL UNIQUE,
    ip_address TEXT,
    mac_address TEXT,
    os_name TEXT,
    os_build TEXT,
    os_edition TEXT,
    user_label TEXT,
    agent_version TEXT,
    cpu_name TEXT,
    cpu_cores INTEGER,
    cpu_threads INTEGER,
    architecture TEXT,
    total_memory_gb DOUBLE PRECISION,
    total_disk_gb DOUBLE PRECISION,
    disk_model TEXT,
    gpu_name TEXT,
    manufacturer TEXT,
    model TEXT,
    serial_number TEXT,
    bios_version TEXT,
    username TEXT,
    domain TEXT,
    timezone TEXT,
    network_adapter TEXT,
    battery_percent DOUBLE PRECISION,
    battery_plugged BOOLEAN,
    drivers TEXT NOT NULL DEFAULT '[]',
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    last_seen TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX systems_is_active ON systems (is_active);
CREATE INDEX systems_last_seen ON systems (last_seen);

CREATE TABLE alert_settings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    system_id INTEGER REFERENCES systems(id) ON DELETE CASCADE,
    cpu_threshold DOUBLE PRECISION NOT NULL DEFAULT 90,
    memory_threshold DOUBLE PRECISION NOT NULL DEFAULT 90,
    disk_threshold DOUBLE PRECISION NOT NULL DEFAULT 90,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX alert_settings_system ON alert_settings (system_id) WHERE system_id IS NOT NULL;
CREATE UNIQUE INDEX alert_settings_global ON alert_settings ((1)) WHERE system_id IS NULL;

CREATE TABLE alert_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('threshold', 'recurrence')),
    table_name TEXT,
    field TEXT,
    comparison TEXT,
    threshold DOUBLE PRECISION,
    window_seconds INTEGER,
    severity TEXT NOT NULL DEFAULT 'WARNING' CHECK (severity IN ('CRITICAL', 'WARNING', 'INFO')),
    system_id INTEGER REFERENCES systems(id) ON DELETE CASCADE,
    config TEXT NOT NULL DEFAULT '{}',
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    system_id INTEGER REFERENCES systems(id) ON DELETE CASCADE,
    rule_id INTEGER REFERENCES alert_rules(id) ON DELETE SET NULL,
    alert_type TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('CRITICAL', 'WARNING', 'INFO')),
    message TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'firing' CHECK (status IN ('firing', 'acknowledged', 'resolved')),
    is_resolved BOOLEAN NOT NULL DEFAULT FALSE,
    fingerprint TEXT,
    acknowledged_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    acknowledged_at TEXT,
    resolved_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX alerts_status ON alerts (status);
CREATE INDEX alerts_system ON alerts (system_id);
CREATE INDEX alerts_created_at ON alerts (created_at);
CREATE INDEX alerts_severity ON alerts (severity);

CREATE TABLE cases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'INVESTIGATING', 'RESOLVED')),
    priority TEXT CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    created_by INTEGER NOT NULL REFERENCES users(id),
    assigned_to INTEGER REFERENCES users(id) ON DELETE SET NULL,
    is_archived BOOLEAN NOT NULL DEFAULT FALSE,
    resolved_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX cases_status ON cases (status);
CREATE INDEX cases_assigned_to ON cases (assigned_to);
CREATE INDEX cases_created_at ON cases (created_at);

CREATE TABLE case_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id INTEGER NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    linked_by INTEGER NOT NULL REFERENCES users(id),
    linked_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (case_id, event_id)
);
CREATE INDEX case_events_event ON case_events (event_id);

CREATE TABLE case_notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id INTEGER NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    author_id INTEGER NOT NULL REFERENCES users(id),
    content TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX case_notes_case ON case_notes (case_id);

CREATE TABLE tags (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE case_tags (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id INTEGER NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    tag_id INTEGER NOT NULL REFERENCES tags(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    UNIQUE (case_id, tag_id)
);

CREATE TABLE tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_number TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'in_progress', 'waiting', 'resolved', 'closed')),
    status_category TEXT NOT NULL DEFAULT 'todo'
        CHECK (status_category IN ('todo', 'in_progress', 'done')),
    priority TEXT NOT NULL DEFAULT 'medium' CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    issue_type TEXT NOT NULL DEFAULT 'task' CHECK (issue_type IN ('bug', 'task', 'story', 'epic')),
    assignee_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
    reporter_id INTEGER NOT NULL REFERENCES users(id),
    system_id INTEGER REFERENCES systems(id) ON DELETE CASCADE,
    alert_id INTEGER REFERENCES alerts(id) ON DELETE SET NULL,
    project_id INTEGER REFERENCES projects(id) ON DELETE SET NULL,
    response_target TEXT,
    resolution_target TEXT,
    first_responded_at TEXT,
    resolved_at TEXT,
    closed_at TEXT,
    is_archived BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX tickets_alert ON tickets (alert_id) WHERE alert_id IS NOT NULL;
CREATE INDEX tickets_status ON tickets (status);
CREATE INDEX tickets_created_at ON tickets (created_at);
CREATE INDEX tickets_assignee ON tickets (assignee_id);
CREATE INDEX tickets_priority ON tickets (priority);
CREATE INDEX tickets_system ON tickets (system_id);

CREATE TABLE ticket_comments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    author_id INTEGER NOT NULL REFERENCES users(id),
    content TEXT NOT NULL CHECK (length(content) > 0),
    comment_type TEXT NOT NULL DEFAULT 'public' CHECK (comment_type IN ('public', 'internal')),
    auditor_visible BOOLEAN NOT NULL DEFAULT FALSE,
    edited_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX ticket_comments_ticket ON ticket_comments (ticket_id);

CREATE TABLE comment_edit_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    comment_id INTEGER NOT NULL REFERENCES ticket_comments(id) ON DELETE CASCADE,
    edited_by INTEGER NOT NULL REFERENCES users(id),
    previous_content TEXT NOT NULL,
    edited_at TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX comment_edit_history_comment ON comment_edit_history (comment_id);

CREATE TABLE links (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_type TEXT NOT NULL,
    source_id TEXT NOT NULL,
    linkable_type TEXT NOT NULL,
    linkable_id TEXT NOT NULL,
    relation TEXT NOT NULL DEFAULT 'related',
    created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at TEXT NOT NULL,
    UNIQUE (source_type, source_id, linkable_type, linkable_id)
);
CREATE INDEX links_linkable ON links (linkable_type, linkable_id);

CREATE TABLE assets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    asset_type TEXT NOT NULL,
    serial_number TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    is_archived BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX assets_serial ON assets (serial_number) WHERE serial_number IS NOT NULL;

-- Append-only and hash-chained: each row carries the hash of the previous row and its own
-- (docs/side-store.md). Updates and deletes are refused by triggers.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT,
    outcome TEXT NOT NULL CHECK (outcome IN ('allowed', 'denied')),
    metadata TEXT NOT NULL DEFAULT '{}',
    ip_address TEXT,
    user_agent TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
-- The newest row's id and hash, updated with every append: deleting the newest rows
-- breaks the match.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_id INTEGER NOT NULL,
    last_hash TEXT NOT NULL
);

CREATE INDEX audit_log_created_at ON audit_log (created_at);
CREATE INDEX audit_log_actor ON audit_log (actor);
CREATE INDEX audit_log_target ON audit_log (target_type, target_id);
CREATE INDEX audit_log_action ON audit_log (action);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

INSERT INTO roles (name, description, created_at) VALUES
    ('admin', 'everything, including users, tokens and settings', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    ('analyst', 'read everything; triage alerts, cases and tickets', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    ('viewer', 'read everything but internal comments', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    ('auditor', 'read-only; sensitive fields redacted, internal comments hidden unless auditor-visible', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    ('agent', 'ingest only', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
INSERT INTO alert_settings (system_id, created_at, updated_at)
    VALUES (NULL, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
