//! The route table: every route with the access class it needs, its summary and its
//! parameters. The auth middleware refuses any route missing here (deny by default), and
//! the OpenAPI document at `/api/v1/openapi.json` is generated from it.

use axum::http::Method;
use serde_json::{Map, Value, json};
use vigil_relational::list::{self, Resource};

/// Who may call a route (roles in [`Access::roles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any valid token.
    Any,
    /// Writing data: admin, agent.
    Ingest,
    /// Reading data and records: admin, analyst, viewer, auditor.
    Read,
    /// Working alerts, cases, tickets, comments, links: admin, analyst.
    Triage,
    /// The audit log: admin, auditor.
    Audit,
    /// Users, tokens, settings, deleting systems: admin.
    Admin,
}

impl Access {
    pub fn roles(self) -> &'static str {
        match self {
            Access::Any => "any role",
            Access::Ingest => "admin or agent",
            Access::Read => "admin, analyst, viewer or auditor",
            Access::Triage => "admin or analyst",
            Access::Audit => "admin or auditor",
            Access::Admin => "admin",
        }
    }
}

/// One route.
#[derive(Debug)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// Query parameters besides a list's filters.
    pub query: &'static [&'static str],
    /// The JSON body's fields, for the document; empty when there is none.
    pub body: &'static str,
    /// For list routes: the resource whose filters and sorts apply.
    pub list: Option<&'static Resource>,
}

const fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    summary: &'static str,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        access,
        summary,
        query: &[],
        body: "",
        list: None,
    }
}

const fn with_query(mut r: RouteSpec, query: &'static [&'static str]) -> RouteSpec {
    r.query = query;
    r
}

const fn with_body(mut r: RouteSpec, body: &'static str) -> RouteSpec {
    r.body = body;
    r
}

const fn listing(mut r: RouteSpec, resource: &'static Resource) -> RouteSpec {
    r.list = Some(resource);
    r
}

use Access::*;

/// Every route of the HTTP API.
pub static ROUTES: &[RouteSpec] = &[
    with_query(
        with_body(
            route("POST", "/api/v1/write", Ingest, "Write line protocol"),
            "line protocol text (gzip allowed)",
        ),
        &["precision"],
    ),
    with_query(
        with_body(
            route("POST", "/write", Ingest, "InfluxDB 1.x write"),
            "line protocol text (gzip allowed)",
        ),
        &["db", "rp", "precision", "u", "p", "consistency"],
    ),
    with_query(
        with_body(
            route("POST", "/api/v2/write", Ingest, "InfluxDB 2.x write"),
            "line protocol text (gzip allowed)",
        ),
        &["org", "orgID", "bucket", "precision"],
    ),
    with_body(
        route("POST", "/api/v1/events", Ingest, "Write events"),
        "NDJSON or a JSON array of events",
    ),
    with_query(
        route("GET", "/api/v1/query", Read, "Run read-only SQL"),
        &["sql", "format"],
    ),
    with_query(
        with_body(
            route("POST", "/api/v1/query", Read, "Run read-only SQL"),
            "{\"sql\": text, \"format\": json|ndjson|csv|arrow|parquet}",
        ),
        &["format"],
    ),
    with_query(
        route("GET", "/api/v1/recurrence", Read, "What keeps happening"),
        &["since", "bucket", "limit", "status", "escalation"],
    ),
    with_query(
        route(
            "GET",
            "/api/v1/trends",
            Read,
            "A metric field per time bucket",
        ),
        &["table", "field", "since", "bucket", "tag", "value"],
    ),
    route("GET", "/health", Any, "Health of the server"),
    route("GET", "/metrics", Read, "Prometheus metrics"),
    route("GET", "/api/v1/openapi.json", Any, "This document"),
    // Systems and their alert thresholds.
    listing(
        route("GET", "/api/v1/systems", Read, "List systems"),
        &list::SYSTEMS,
    ),
    with_body(
        route(
            "POST",
            "/api/v1/systems",
            Ingest,
            "Report a system's inventory (upsert by hostname)",
        ),
        "{hostname, os_name?, cpu_name?, cpu_cores?, total_memory_gb?, total_disk_gb?, agent_version?}",
    ),
    route("GET", "/api/v1/systems/{id}", Read, "Get a system"),
    with_body(
        route(
            "PATCH",
            "/api/v1/systems/{id}",
            Triage,
            "Label or (de)activate a system",
        ),
        "{user_label?, is_active?}",
    ),
    route(
        "DELETE",
        "/api/v1/systems/{id}",
        Admin,
        "Delete a system with its alerts, tickets and settings",
    ),
    route(
        "GET",
        "/api/v1/systems/{id}/alert-settings",
        Read,
        "Thresholds in force for a system",
    ),
    with_body(
        route(
            "PUT",
            "/api/v1/systems/{id}/alert-settings",
            Admin,
            "Set a system's thresholds",
        ),
        "{cpu_threshold, memory_threshold, disk_threshold} in percent",
    ),
    route(
        "GET",
        "/api/v1/alert-settings",
        Read,
        "Global alert thresholds",
    ),
    with_body(
        route(
            "PUT",
            "/api/v1/alert-settings",
            Admin,
            "Set the global thresholds",
        ),
        "{cpu_threshold, memory_threshold, disk_threshold} in percent",
    ),
    // Alerts.
    listing(
        route("GET", "/api/v1/alerts", Read, "List alerts"),
        &list::ALERTS,
    ),
    with_body(
        route("POST", "/api/v1/alerts", Triage, "Raise an alert"),
        "{system_id?, alert_type, severity: CRITICAL|WARNING|INFO, message}",
    ),
    route("GET", "/api/v1/alerts/{id}", Read, "Get an alert"),
    route(
        "POST",
        "/api/v1/alerts/{id}/acknowledge",
        Triage,
        "Acknowledge a firing alert",
    ),
    route(
        "POST",
        "/api/v1/alerts/{id}/resolve",
        Triage,
        "Resolve an alert",
    ),
    with_body(
        route(
            "POST",
            "/api/v1/alerts/{id}/ticket",
            Triage,
            "The alert's ticket, created once (idempotent)",
        ),
        "optional {priority?, issue_type?, assignee_id?}",
    ),
    // Cases.
    listing(
        route("GET", "/api/v1/cases", Read, "List cases"),
        &list::CASES,
    ),
    with_body(
        route("POST", "/api/v1/cases", Triage, "Open a case"),
        "{title, description?, priority?}",
    ),
    route("GET", "/api/v1/cases/{id}", Read, "Get a case"),
    with_body(
        route(
            "PATCH",
            "/api/v1/cases/{id}",
            Triage,
            "Change a case's title, description, priority, status or assignee",
        ),
        "{title?, description?, priority?, status?: OPEN|INVESTIGATING|RESOLVED, assigned_to?: id|null}",
    ),
    route(
        "GET",
        "/api/v1/cases/{id}/events",
        Read,
        "Event ids linked to a case",
    ),
    with_body(
        route(
            "POST",
            "/api/v1/cases/{id}/events",
            Triage,
            "Link an event to a case",
        ),
        "{event_id}",
    ),
    route(
        "DELETE",
        "/api/v1/cases/{id}/events/{event_id}",
        Triage,
        "Unlink an event",
    ),
    route("GET", "/api/v1/cases/{id}/notes", Read, "A case's notes"),
    with_body(
        route(
            "POST",
            "/api/v1/cases/{id}/notes",
            Triage,
            "Add a note to a case",
        ),
        "{content}",
    ),
    with_body(
        route("POST", "/api/v1/cases/{id}/tags", Triage, "Tag a case"),
        "{tag}",
    ),
    // Tickets and comments.
    listing(
        route("GET", "/api/v1/tickets", Read, "List tickets"),
        &list::TICKETS,
    ),
    with_body(
        route("POST", "/api/v1/tickets", Triage, "Create a ticket"),
        "{title, description?, priority?, issue_type?, assignee_id?, system_id?, alert_id?, project_id?}",
    ),
    route("GET", "/api/v1/tickets/{id}", Read, "Get a ticket"),
    with_body(
        route(
            "PATCH",
            "/api/v1/tickets/{id}",
            Triage,
            "Change status, priority, assignee, title or description",
        ),
        "{status?, priority?, assignee_id?: id|null, title?, description?}",
    ),
    route(
        "GET",
        "/api/v1/tickets/{id}/comments",
        Read,
        "A ticket's comments the caller may see",
    ),
    with_body(
        route(
            "POST",
            "/api/v1/tickets/{id}/comments",
            Triage,
            "Comment on a ticket",
        ),
        "{content, internal?: bool, auditor_visible?: bool}",
    ),
    with_body(
        route(
            "PATCH",
            "/api/v1/comments/{id}",
            Triage,
            "Edit a comment (the old text is kept)",
        ),
        "{content}",
    ),
    route(
        "GET",
        "/api/v1/comments/{id}/history",
        Read,
        "A comment's earlier texts",
    ),
    // Links.
    with_query(
        route("GET", "/api/v1/links", Read, "Links from a record"),
        &["source_type", "source_id"],
    ),
    with_body(
        route("POST", "/api/v1/links", Triage, "Link two records"),
        "{source_type, source_id, linkable_type, linkable_id, relation?}",
    ),
    route("DELETE", "/api/v1/links/{id}", Triage, "Remove a link"),
    // Audit, users, tokens.
    listing(
        route("GET", "/api/v1/audit", Audit, "List audit rows"),
        &list::AUDIT,
    ),
    route(
        "GET",
        "/api/v1/audit/verify",
        Audit,
        "Check the audit hash chain",
    ),
    route(
        "GET",
        "/api/v1/users",
        Admin,
        "List users with their roles (never password hashes)",
    ),
    with_body(
        route(
            "PATCH",
            "/api/v1/users/{id}",
            Admin,
            "(De)activate a user: a deactivated user's tokens stop working",
        ),
        "{is_active}",
    ),
    with_body(
        route("POST", "/api/v1/users", Admin, "Add a user"),
        "{email, password, display_name?, roles: [admin|analyst|viewer|auditor|agent]}",
    ),
    route(
        "GET",
        "/api/v1/tokens",
        Admin,
        "List API tokens (never their secrets)",
    ),
    with_body(
        route(
            "POST",
            "/api/v1/tokens",
            Admin,
            "Create an API token (its secret is shown once)",
        ),
        "{name, role, user_id?, expires_at?: RFC 3339}",
    ),
    route("DELETE", "/api/v1/tokens/{id}", Admin, "Revoke a token"),
];

/// The route table entry of a matched route.
pub fn route_spec(method: &Method, path: &str) -> Option<&'static RouteSpec> {
    // HEAD is served by GET routes.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

fn param(name: &str, location: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": location,
        "required": location == "path",
        "schema": {"type": "string"},
        "description": description,
    })
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|p| param(p, "path", ""))
            .collect();
        params.extend(r.query.iter().map(|q| param(q, "query", "")));
        if let Some(res) = r.list {
            for f in res.filters {
                let description = match f.default {
                    Some(d) => format!("filter on {} (default {d}; any lifts it)", f.column),
                    None => format!("filter on {}", f.column),
                };
                params.push(param(f.param, "query", &description));
            }
            params.push(param(
                "sort",
                "query",
                &format!(
                    "one of {} (prefix - for descending); default {}",
                    res.sort_names().join(", "),
                    res.default_sort
                ),
            ));
            params.push(param("cursor", "query", "next_cursor of the previous page"));
            params.push(param(
                "limit",
                "query",
                &format!(
                    "rows per page, 1 to {} (default {})",
                    list::MAX_LIMIT,
                    list::DEFAULT_LIMIT
                ),
            ));
        }
        let mut op = json!({
            "summary": r.summary,
            "x-vigil-access": format!("{:?}", r.access).to_lowercase(),
            "description": format!("Allowed for {}.", r.access.roles()),
            "parameters": params,
            "responses": {
                "200": {"description": if r.list.is_some() {
                    "a page: {\"items\": [...], \"next_cursor\": text|null}"
                } else { "success" }},
                "401": {"description": "missing, unknown, revoked or expired token"},
                "403": {"description": "the token's role may not call this route"},
            },
        });
        if !r.body.is_empty() {
            op["requestBody"] = json!({
                "content": {"application/json": {"schema": {"type": "object", "description": r.body}}}
            });
        }
        paths
            .entry(r.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path item is an object")
            .insert(r.method.to_lowercase(), op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Vigil", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    })
}
