//! Tickets and their comments: numbering, status transitions with lifecycle times, SLA
//! targets from a priority policy, idempotent creation from an alert, comments (public or
//! internal) with edit history. Every change appends its audit row in its transaction.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::audit::Outcome;
use crate::auth::{Principal, Role};
use crate::error::{Error, Result};
use crate::list::{ListParams, MAX_LIMIT};
use crate::{Db, append_audit, dispatch};

/// Ticket statuses and the category each belongs to.
pub const STATUSES: [(&str, &str); 5] = [
    ("open", "todo"),
    ("in_progress", "in_progress"),
    ("waiting", "in_progress"),
    ("resolved", "done"),
    ("closed", "done"),
];
pub const PRIORITIES: [&str; 4] = ["low", "medium", "high", "critical"];
pub const ISSUE_TYPES: [&str; 4] = ["bug", "task", "story", "epic"];

/// The status category of `status`.
pub fn status_category(status: &str) -> Result<&'static str> {
    STATUSES
        .iter()
        .find(|(s, _)| *s == status)
        .map(|(_, c)| *c)
        .ok_or_else(|| {
            Error::invalid(
                "status",
                format!("'{status}': expected open, in_progress, waiting, resolved or closed"),
            )
        })
}

/// Whether a ticket may go from `from` to `to`. A closed ticket can only be reopened.
pub fn transition_allowed(from: &str, to: &str) -> bool {
    from != to && (from != "closed" || to == "open")
}

/// SLA policy: (time to first response, time to resolution) by priority.
pub fn sla_targets(priority: &str) -> Result<(Duration, Duration)> {
    Ok(match priority {
        "critical" => (Duration::hours(1), Duration::hours(4)),
        "high" => (Duration::hours(4), Duration::hours(24)),
        "medium" => (Duration::hours(8), Duration::hours(72)),
        "low" => (Duration::hours(24), Duration::hours(120)),
        other => {
            return Err(Error::invalid(
                "priority",
                format!("'{other}': expected low, medium, high or critical"),
            ));
        }
    })
}

pub(crate) fn check_choice(field: &'static str, value: &str, choices: &[&str]) -> Result<()> {
    if choices.contains(&value) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("'{value}': expected one of {}", choices.join(", ")),
        ))
    }
}

/// A ticket as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ticket {
    pub id: i64,
    pub ticket_number: String,
    pub title: String,
    pub description: String,
    pub status: String,
    pub status_category: String,
    pub priority: String,
    pub issue_type: String,
    pub assignee_id: Option<i64>,
    pub reporter_id: i64,
    pub system_id: Option<i64>,
    pub alert_id: Option<i64>,
    pub project_id: Option<i64>,
    pub response_target: Option<DateTime<Utc>>,
    pub resolution_target: Option<DateTime<Utc>>,
    pub first_responded_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a new ticket says.
#[derive(Debug, Clone, Default)]
pub struct NewTicket {
    pub title: String,
    pub description: String,
    pub priority: Option<String>,
    pub issue_type: Option<String>,
    pub assignee_id: Option<i64>,
    pub system_id: Option<i64>,
    pub alert_id: Option<i64>,
    pub project_id: Option<i64>,
}

/// A change to a ticket: only the fields given change.
#[derive(Debug, Clone, Default)]
pub struct TicketPatch {
    pub status: Option<String>,
    pub priority: Option<String>,
    /// `Some(None)` unassigns.
    pub assignee_id: Option<Option<i64>>,
    pub title: Option<String>,
    pub description: Option<String>,
}

/// Filters and page of a ticket list (newest first, `before` an id for the next page).
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    pub status: Option<String>,
    pub priority: Option<String>,
    pub assignee_id: Option<i64>,
    pub system_id: Option<i64>,
    pub before: Option<i64>,
    pub limit: i64,
}

/// A comment as its reader may see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comment {
    pub id: i64,
    pub ticket_id: i64,
    pub author_id: i64,
    pub content: String,
    pub comment_type: String,
    pub auditor_visible: bool,
    pub edited_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

pub(crate) const TICKET_COLUMNS: &str = "id, ticket_number, title, description, status, status_category, \
    priority, issue_type, assignee_id, reporter_id, system_id, alert_id, project_id, \
    response_target, resolution_target, first_responded_at, resolved_at, closed_at, \
    created_at, updated_at";

macro_rules! ticket_from_row {
    ($r:expr) => {{
        let r = $r;
        Ticket {
            id: r.try_get("id")?,
            ticket_number: r.try_get("ticket_number")?,
            title: r.try_get("title")?,
            description: r.try_get("description")?,
            status: r.try_get("status")?,
            status_category: r.try_get("status_category")?,
            priority: r.try_get("priority")?,
            issue_type: r.try_get("issue_type")?,
            assignee_id: r.try_get("assignee_id")?,
            reporter_id: r.try_get("reporter_id")?,
            system_id: r.try_get("system_id")?,
            alert_id: r.try_get("alert_id")?,
            project_id: r.try_get("project_id")?,
            response_target: r.try_get("response_target")?,
            resolution_target: r.try_get("resolution_target")?,
            first_responded_at: r.try_get("first_responded_at")?,
            resolved_at: r.try_get("resolved_at")?,
            closed_at: r.try_get("closed_at")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        }
    }};
}

crate::from_rows!(Ticket, ticket_from_row);

/// The columns a new ticket is inserted with, bound by `bind_new_ticket!`.
macro_rules! new_ticket_columns {
    () => {
        "title, description, status, status_category, priority, issue_type, assignee_id, \
         reporter_id, system_id, alert_id, project_id, response_target, resolution_target, \
         created_at, updated_at"
    };
}

macro_rules! bind_new_ticket {
    ($query:expr, $t:expr) => {{
        let t: &Ticket = $t;
        $query
            .bind(t.title.clone())
            .bind(t.description.clone())
            .bind(t.status.clone())
            .bind(t.status_category.clone())
            .bind(t.priority.clone())
            .bind(t.issue_type.clone())
            .bind(t.assignee_id)
            .bind(t.reporter_id)
            .bind(t.system_id)
            .bind(t.alert_id)
            .bind(t.project_id)
            .bind(t.response_target)
            .bind(t.resolution_target)
            .bind(t.created_at)
            .bind(t.updated_at)
    }};
}

/// The references a new ticket's insert may break.
const TICKET_REFERENCES: &str = "assignee_id, system_id or project_id";

/// How a write inserts a new ticket (`id` and `ticket_number` not yet set) and learns its
/// id.
trait InsertTicket {
    fn insert_ticket(&mut self, t: &Ticket) -> impl Future<Output = Result<i64>> + Send;
}

/// SQLite: the group writer hands out the id, and the insert (id and number included)
/// goes with the write's last round trip.
impl InsertTicket for crate::SqliteWrite {
    async fn insert_ticket(&mut self, t: &Ticket) -> Result<i64> {
        let id = self.next_id("tickets").await?;
        let insert = self
            .defer(concat!(
                "INSERT INTO tickets (id, ticket_number, ",
                new_ticket_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                 $16, $17)"
            ))
            .bind(id)
            .bind(ticket_number(id));
        bind_new_ticket!(insert, t);
        Ok(id)
    }
}

/// PostgreSQL: the sequence gives the id, the `tickets_number` trigger the number.
impl InsertTicket for sqlx::Transaction<'static, sqlx::Postgres> {
    async fn insert_ticket(&mut self, t: &Ticket) -> Result<i64> {
        bind_new_ticket!(
            sqlx::query_scalar(concat!(
                "INSERT INTO tickets (ticket_number, ",
                new_ticket_columns!(),
                ") VALUES ('', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 RETURNING id"
            )),
            t
        )
        .fetch_one(&mut **self)
        .await
        .map_err(|e| Error::or_reference(e, TICKET_REFERENCES))
    }
}

/// `VIG-` and the id, at least six digits (as the `tickets_number` trigger sets it).
fn ticket_number(id: i64) -> String {
    format!("VIG-{id:06}")
}

pub(crate) fn validate_title(title: &str) -> Result<()> {
    let n = title.trim().chars().count();
    if n == 0 || n > 200 {
        return Err(Error::invalid("title", "must be 1 to 200 characters"));
    }
    Ok(())
}

fn reporter(by: &Principal) -> Result<i64> {
    by.user_id.ok_or_else(|| {
        Error::invalid(
            "reporter",
            "tickets are reported by a user; this token has none",
        )
    })
}

impl Db {
    /// Creates a ticket: numbered `VIG-<id>` (six digits at least), status open, SLA targets
    /// from its priority. With an `alert_id` it is idempotent: the alert's existing ticket is
    /// returned, and `created` is false.
    pub async fn create_ticket(&self, by: &Principal, new: &NewTicket) -> Result<(Ticket, bool)> {
        validate_title(&new.title)?;
        let priority = new.priority.as_deref().unwrap_or("medium");
        let (response, resolution) = sla_targets(priority)?;
        let issue_type = new.issue_type.as_deref().unwrap_or("task");
        check_choice("issue_type", issue_type, &ISSUE_TYPES)?;
        let reporter_id = reporter(by)?;
        let now = Utc::now().trunc_subsecs(6);
        let (ticket, created): (Ticket, bool) = dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let mut found = None;
            if let Some(alert) = new.alert_id {
                let existing = sqlx::query("SELECT id FROM tickets WHERE alert_id = $1")
                    .bind(alert)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(row) = existing {
                    found = Some(row.try_get::<i64, _>(0)?);
                } else if sqlx::query("SELECT id FROM alerts WHERE id = $1")
                    .bind(alert)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_none()
                {
                    return Err(Error::not_found("alert", alert));
                }
            }
            match found {
                Some(id) => {
                    drop(tx);
                    (self.ticket(id).await?, false)
                }
                None => {
                    let mut ticket = Ticket {
                        id: 0,
                        ticket_number: String::new(),
                        title: new.title.trim().to_string(),
                        description: new.description.clone(),
                        status: "open".into(),
                        status_category: "todo".into(),
                        priority: priority.into(),
                        issue_type: issue_type.into(),
                        assignee_id: new.assignee_id,
                        reporter_id,
                        system_id: new.system_id,
                        alert_id: new.alert_id,
                        project_id: new.project_id,
                        response_target: Some(now + response),
                        resolution_target: Some(now + resolution),
                        first_responded_at: None,
                        resolved_at: None,
                        closed_at: None,
                        created_at: now,
                        updated_at: now,
                    };
                    let id = tx.insert_ticket(&ticket).await?;
                    ticket.id = id;
                    ticket.ticket_number = ticket_number(id);
                    let entry = by.entry(
                        "TICKET_CREATED",
                        "ticket",
                        Some(id.to_string()),
                        Outcome::Allowed,
                        json!({"title": new.title.trim(), "priority": priority, "issue_type": issue_type,
                               "assignee_id": new.assignee_id, "alert_id": new.alert_id}),
                    );
                    append_audit!(tx, &entry)?;
                    // On SQLite the insert runs here (deferred): its errors too.
                    tx.commit().await.map_err(|e| Error::or_reference(e, TICKET_REFERENCES))?;
                    (ticket, true)
                }
            }
        });
        Ok((ticket, created))
    }

    /// The ticket with `id`.
    pub async fn ticket(&self, id: i64) -> Result<Ticket> {
        dispatch!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1"
            )))
                .bind(id)
                .fetch_optional(pool.ex())
                .await?
                .ok_or_else(|| Error::not_found("ticket", id))?;
            Ok(ticket_from_row!(&row))
        })
    }

    /// Tickets matching `filter`, newest first; the next page starts before the last id:
    /// a [`Db::list`] of [`crate::list::TICKETS`].
    pub async fn tickets(&self, filter: &TicketFilter) -> Result<Vec<Ticket>> {
        if let Some(s) = &filter.status {
            status_category(s)?;
        }
        if let Some(p) = &filter.priority {
            check_choice("priority", p, &PRIORITIES)?;
        }
        let mut params = ListParams {
            limit: Some(filter.limit.clamp(1, MAX_LIMIT)),
            ..ListParams::default()
        };
        let filters = [
            ("status", filter.status.clone()),
            ("priority", filter.priority.clone()),
            ("assignee_id", filter.assignee_id.map(|v| v.to_string())),
            ("system_id", filter.system_id.map(|v| v.to_string())),
        ];
        for (name, value) in filters {
            if let Some(v) = value {
                params = params.filter(name, v);
            }
        }
        let before = filter.before.map(|id| format!("id < {id}"));
        Ok(self
            .list(&crate::list::TICKETS, &params, before.as_deref())
            .await?
            .items)
    }

    /// Changes status, priority, assignee, title or description. Status changes follow
    /// [`transition_allowed`]; resolving sets `resolved_at`, closing sets `closed_at` (and
    /// `resolved_at` when unset), reopening clears both. A new priority recomputes the SLA
    /// targets from the creation time.
    pub async fn patch_ticket(
        &self,
        by: &Principal,
        id: i64,
        patch: &TicketPatch,
    ) -> Result<Ticket> {
        if let Some(t) = &patch.title {
            validate_title(t)?;
        }
        if let Some(s) = &patch.status {
            status_category(s)?;
        }
        if let Some(p) = &patch.priority {
            sla_targets(p)?;
        }
        let before = self.ticket(id).await?;
        let mut after = before.clone();
        let now = Utc::now().trunc_subsecs(6);
        if let Some(status) = &patch.status
            && *status != before.status
        {
            if !transition_allowed(&before.status, status) {
                return Err(Error::invalid(
                    "status",
                    format!(
                        "a {} ticket cannot become {status}; reopen it first",
                        before.status
                    ),
                ));
            }
            after.status = status.clone();
            after.status_category = status_category(status)?.to_string();
            match status.as_str() {
                "resolved" => after.resolved_at = after.resolved_at.or(Some(now)),
                "closed" => {
                    after.closed_at = Some(now);
                    after.resolved_at = after.resolved_at.or(Some(now));
                }
                _ => {
                    after.resolved_at = None;
                    after.closed_at = None;
                }
            }
        }
        if let Some(p) = &patch.priority {
            let (response, resolution) = sla_targets(p)?;
            after.priority = p.clone();
            after.response_target = Some(before.created_at + response);
            after.resolution_target = Some(before.created_at + resolution);
        }
        if let Some(a) = patch.assignee_id {
            after.assignee_id = a;
        }
        if let Some(t) = &patch.title {
            after.title = t.trim().to_string();
        }
        if let Some(d) = &patch.description {
            after.description = d.clone();
        }
        let diff = diff(&before, &after);
        if diff.as_object().is_some_and(|d| d.is_empty()) {
            return Ok(before);
        }
        after.updated_at = now;
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE tickets SET status = $1, status_category = $2, priority = $3, assignee_id = $4, \
                 title = $5, description = $6, response_target = $7, resolution_target = $8, \
                 resolved_at = $9, closed_at = $10, updated_at = $11 WHERE id = $12 AND updated_at = $13",
            )
            .bind(&after.status)
            .bind(&after.status_category)
            .bind(&after.priority)
            .bind(after.assignee_id)
            .bind(&after.title)
            .bind(&after.description)
            .bind(after.response_target)
            .bind(after.resolution_target)
            .bind(after.resolved_at)
            .bind(after.closed_at)
            .bind(now)
            .bind(id)
            .bind(before.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::or_reference(e, "assignee_id"))?
            .rows_affected();
            if n == 0 {
                return Err(Error::Conflict {
                    what: format!("a newer change of ticket {id}; read it again and retry"),
                });
            }
            let entry = by.entry("TICKET_UPDATED", "ticket", Some(id.to_string()), Outcome::Allowed, diff);
            append_audit!(tx, &entry)?;
            tx.commit().await?;
        });
        self.ticket(id).await
    }

    /// Adds a comment. The first public comment sets the ticket's `first_responded_at`.
    pub async fn add_comment(
        &self,
        by: &Principal,
        ticket_id: i64,
        content: &str,
        internal: bool,
        auditor_visible: bool,
    ) -> Result<Comment> {
        if content.trim().is_empty() {
            return Err(Error::invalid("content", "must not be empty"));
        }
        let author_id = by.user_id.ok_or_else(|| {
            Error::invalid(
                "author",
                "comments are written by a user; this token has none",
            )
        })?;
        self.ticket(ticket_id).await?;
        let now = Utc::now().trunc_subsecs(6);
        let kind = if internal { "internal" } else { "public" };
        let id: i64 = dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let id: i64 = sqlx::query(
                "INSERT INTO ticket_comments (ticket_id, author_id, content, comment_type, auditor_visible, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
            )
            .bind(ticket_id)
            .bind(author_id)
            .bind(content)
            .bind(kind)
            .bind(auditor_visible)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            if !internal {
                sqlx::query(
                    "UPDATE tickets SET first_responded_at = $1 WHERE id = $2 AND first_responded_at IS NULL",
                )
                .bind(now)
                .bind(ticket_id)
                .execute(&mut *tx)
                .await?;
            }
            let entry = by.entry(
                "COMMENT_ADDED",
                "ticket",
                Some(ticket_id.to_string()),
                Outcome::Allowed,
                json!({"comment_id": id, "comment_type": kind}),
            );
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            id
        });
        Ok(Comment {
            id,
            ticket_id,
            author_id,
            content: content.to_string(),
            comment_type: kind.to_string(),
            auditor_visible,
            edited_at: None,
            created_at: now,
        })
    }

    /// Replaces a comment's text, keeping the previous text in `comment_edit_history`.
    pub async fn edit_comment(&self, by: &Principal, comment_id: i64, content: &str) -> Result<()> {
        if content.trim().is_empty() {
            return Err(Error::invalid("content", "must not be empty"));
        }
        let editor = by.user_id.ok_or_else(|| {
            Error::invalid(
                "author",
                "comments are edited by a user; this token has none",
            )
        })?;
        let now = Utc::now().trunc_subsecs(6);
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let row = sqlx::query("SELECT content, ticket_id FROM ticket_comments WHERE id = $1")
                .bind(comment_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::not_found("comment", comment_id))?;
            let previous: String = row.try_get(0)?;
            let ticket_id: i64 = row.try_get(1)?;
            sqlx::query(
                "INSERT INTO comment_edit_history (comment_id, edited_by, previous_content, edited_at, created_at) \
                 VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(comment_id)
            .bind(editor)
            .bind(&previous)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE ticket_comments SET content = $1, edited_at = $2, updated_at = $2 WHERE id = $3")
                .bind(content)
                .bind(now)
                .bind(comment_id)
                .execute(&mut *tx)
                .await?;
            let entry = by.entry(
                "COMMENT_EDITED",
                "ticket",
                Some(ticket_id.to_string()),
                Outcome::Allowed,
                json!({"comment_id": comment_id, "content": {"from": previous, "to": content}}),
            );
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            Ok::<_, Error>(())
        })
    }

    /// A ticket's comments that `reader` may see, oldest first: internal comments are
    /// hidden from viewers and agents, and from auditors unless marked auditor-visible.
    pub async fn comments(&self, reader: &Principal, ticket_id: i64) -> Result<Vec<Comment>> {
        self.ticket(ticket_id).await?;
        let rows: Vec<Comment> = dispatch!(self, pool => {
            sqlx::query(
                "SELECT id, ticket_id, author_id, content, comment_type, auditor_visible, edited_at, created_at \
                 FROM ticket_comments WHERE ticket_id = $1 ORDER BY id",
            )
            .bind(ticket_id)
            .fetch_all(pool.ex())
            .await?
            .iter()
            .map(|r| {
                Ok(Comment {
                    id: r.try_get(0)?,
                    ticket_id: r.try_get(1)?,
                    author_id: r.try_get(2)?,
                    content: r.try_get(3)?,
                    comment_type: r.try_get(4)?,
                    auditor_visible: r.try_get(5)?,
                    edited_at: r.try_get(6)?,
                    created_at: r.try_get(7)?,
                })
            })
            .collect::<Result<Vec<_>>>()?
        });
        Ok(rows
            .into_iter()
            .filter(|c| {
                c.comment_type == "public"
                    || match reader.role {
                        Role::Admin | Role::Analyst => true,
                        Role::Auditor => c.auditor_visible,
                        Role::Viewer | Role::Agent => false,
                    }
            })
            .collect())
    }

    /// A comment's earlier texts, oldest first.
    pub async fn comment_history(&self, comment_id: i64) -> Result<Vec<(String, DateTime<Utc>)>> {
        dispatch!(self, pool => {
            sqlx::query(
                "SELECT previous_content, edited_at FROM comment_edit_history WHERE comment_id = $1 ORDER BY id",
            )
            .bind(comment_id)
            .fetch_all(pool.ex())
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
        })
    }
}

/// `{"field": {"from": …, "to": …}}` for every field that differs.
fn diff(before: &Ticket, after: &Ticket) -> Value {
    let (b, a) = (json!(before), json!(after));
    let mut out = serde_json::Map::new();
    if let (Some(b), Some(a)) = (b.as_object(), a.as_object()) {
        for (k, v) in a {
            if k != "updated_at" && b.get(k) != Some(v) {
                out.insert(k.clone(), json!({"from": b.get(k), "to": v}));
            }
        }
    }
    Value::Object(out)
}
