//! Cases: investigations that collect events. Status moves OPEN → INVESTIGATING →
//! RESOLVED (and back to OPEN to reopen); events are linked by event id, once per case;
//! notes and tags. Every change appends its audit row in its transaction.

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use crate::audit::Outcome;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::list::{ListParams, Page};
use crate::{Db, append_audit, dispatch};

/// Case statuses.
pub const CASE_STATUSES: [&str; 3] = ["OPEN", "INVESTIGATING", "RESOLVED"];

/// Whether a case may go from `from` to `to`: forward one step, straight to RESOLVED, or
/// back to OPEN (reopen).
pub fn case_transition_allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("OPEN", "INVESTIGATING")
            | ("OPEN", "RESOLVED")
            | ("INVESTIGATING", "RESOLVED")
            | ("INVESTIGATING", "OPEN")
            | ("RESOLVED", "OPEN")
    )
}

/// A case as stored, with its tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Case {
    pub id: i64,
    pub title: String,
    pub description: String,
    pub status: String,
    pub priority: Option<String>,
    pub created_by: i64,
    pub assigned_to: Option<i64>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) const CASE_COLUMNS: &str = "id, title, description, status, priority, created_by, \
    assigned_to, resolved_at, created_at, updated_at";

/// A case from a row of [`CASE_COLUMNS`], without its tags.
macro_rules! case_from_row {
    ($r:expr) => {{
        let r = $r;
        Case {
            id: r.try_get(0)?,
            title: r.try_get(1)?,
            description: r.try_get(2)?,
            status: r.try_get(3)?,
            priority: r.try_get(4)?,
            created_by: r.try_get(5)?,
            assigned_to: r.try_get(6)?,
            resolved_at: r.try_get(7)?,
            tags: Vec::new(),
            created_at: r.try_get(8)?,
            updated_at: r.try_get(9)?,
        }
    }};
}

crate::from_rows!(Case, case_from_row);

/// A note on a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseNote {
    pub id: i64,
    pub case_id: i64,
    pub author_id: i64,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

/// A case's title is 1 to 200 characters and its priority one of [`crate::PRIORITIES`]
/// (as a ticket's).
fn check_case_fields(title: Option<&str>, priority: Option<&str>) -> Result<()> {
    if let Some(t) = title {
        crate::tickets::validate_title(t)?;
    }
    if let Some(p) = priority {
        crate::tickets::check_choice("priority", p, &crate::PRIORITIES)?;
    }
    Ok(())
}

fn user_of(by: &Principal) -> Result<i64> {
    by.user_id
        .ok_or_else(|| Error::invalid("user", "cases are worked by users; this token has none"))
}

impl Db {
    /// Opens a case.
    pub async fn create_case(
        &self,
        by: &Principal,
        title: &str,
        description: &str,
        priority: Option<&str>,
    ) -> Result<Case> {
        check_case_fields(Some(title), priority)?;
        let creator = user_of(by)?;
        let now = Utc::now().trunc_subsecs(6);
        let id: i64 = dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let id: i64 = sqlx::query(
                "INSERT INTO cases (title, description, status, priority, created_by, created_at, updated_at) \
                 VALUES ($1, $2, 'OPEN', $3, $4, $5, $5) RETURNING id",
            )
            .bind(title.trim())
            .bind(description)
            .bind(priority)
            .bind(creator)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            let entry = by.entry("CASE_CREATED", "case", Some(id.to_string()), Outcome::Allowed,
                json!({"title": title.trim(), "priority": priority}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            id
        });
        self.case(id).await
    }

    /// The case with `id`.
    pub async fn case(&self, id: i64) -> Result<Case> {
        let case = dispatch!(self, pool => {
            let r = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {CASE_COLUMNS} FROM cases WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool.ex())
            .await?
            .ok_or_else(|| Error::not_found("case", id))?;

            Ok::<_, Error>(case_from_row!(&r))
        })?;
        Ok(Case {
            tags: self.case_tags(id).await?,
            ..case
        })
    }

    /// A case's tags, by name.
    async fn case_tags(&self, id: i64) -> Result<Vec<String>> {
        dispatch!(self, pool => {
            sqlx::query(
                "SELECT t.name FROM case_tags ct JOIN tags t ON t.id = ct.tag_id WHERE ct.case_id = $1 ORDER BY t.name",
            )
            .bind(id)
            .fetch_all(pool.ex())
            .await?
            .iter()
            .map(|t| Ok(t.try_get::<String, _>(0)?))
            .collect()
        })
    }

    /// A page of cases with their tags ([`crate::list::CASES`] says the filters and sorts).
    pub async fn cases(&self, params: &ListParams) -> Result<Page<Case>> {
        let mut page: Page<Case> = self.list(&crate::list::CASES, params, None).await?;
        for case in &mut page.items {
            case.tags = self.case_tags(case.id).await?;
        }
        Ok(page)
    }

    /// Moves a case to `status` ([`case_transition_allowed`]); RESOLVED sets `resolved_at`,
    /// reopening clears it.
    pub async fn set_case_status(&self, by: &Principal, id: i64, status: &str) -> Result<Case> {
        if !CASE_STATUSES.contains(&status) {
            return Err(Error::invalid(
                "status",
                format!("'{status}': expected OPEN, INVESTIGATING or RESOLVED"),
            ));
        }
        let before = self.case(id).await?;
        if !case_transition_allowed(&before.status, status) {
            return Err(Error::invalid(
                "status",
                format!("a case cannot go from {} to {status}", before.status),
            ));
        }
        let now = Utc::now().trunc_subsecs(6);
        let resolved_at = (status == "RESOLVED").then_some(now);
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE cases SET status = $1, resolved_at = $2, updated_at = $3 WHERE id = $4 AND status = $5",
            )
            .bind(status)
            .bind(resolved_at)
            .bind(now)
            .bind(id)
            .bind(&before.status)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(Error::Conflict {
                    what: format!("a newer status of case {id}; read it again and retry"),
                });
            }
            let entry = by.entry("CASE_UPDATED", "case", Some(id.to_string()), Outcome::Allowed,
                json!({"status": {"from": before.status, "to": status}}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
        });
        self.case(id).await
    }

    /// Assigns a case (`None` unassigns).
    pub async fn assign_case(&self, by: &Principal, id: i64, user: Option<i64>) -> Result<Case> {
        let before = self.case(id).await?;
        let now = Utc::now().trunc_subsecs(6);
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("UPDATE cases SET assigned_to = $1, updated_at = $2 WHERE id = $3")
                .bind(user)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| Error::or_reference(e, "assigned_to"))?;
            let entry = by.entry("CASE_ASSIGNED", "case", Some(id.to_string()), Outcome::Allowed,
                json!({"assigned_to": {"from": before.assigned_to, "to": user}}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
        });
        self.case(id).await
    }

    /// Links an event (by its `event_id`) to a case; linking it twice is 409.
    pub async fn link_event(&self, by: &Principal, case_id: i64, event_id: &str) -> Result<()> {
        if event_id.trim().is_empty() || event_id.len() > 200 {
            return Err(Error::invalid("event_id", "must be 1 to 200 characters"));
        }
        let user = user_of(by)?;
        self.case(case_id).await?;
        let now = Utc::now().trunc_subsecs(6);
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO case_events (case_id, event_id, linked_by, linked_at, created_at) VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(case_id)
            .bind(event_id)
            .bind(user)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::or_conflict(e, format!("event {event_id} in case {case_id}")))?;
            let entry = by.entry("EVENT_LINKED", "case", Some(case_id.to_string()), Outcome::Allowed,
                json!({"event_id": event_id}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Unlinks an event from a case (404 when it was not linked).
    pub async fn unlink_event(&self, by: &Principal, case_id: i64, event_id: &str) -> Result<()> {
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query("DELETE FROM case_events WHERE case_id = $1 AND event_id = $2")
                .bind(case_id)
                .bind(event_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(Error::not_found("linked event", format!("{event_id} in case {case_id}")));
            }
            let entry = by.entry("EVENT_UNLINKED", "case", Some(case_id.to_string()), Outcome::Allowed,
                json!({"event_id": event_id}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// The event ids linked to a case, in link order.
    pub async fn case_events(&self, case_id: i64) -> Result<Vec<String>> {
        self.case(case_id).await?;
        dispatch!(self, pool => {
            sqlx::query("SELECT event_id FROM case_events WHERE case_id = $1 ORDER BY id")
                .bind(case_id)
                .fetch_all(pool.ex())
                .await?
                .iter()
                .map(|r| Ok(r.try_get::<String, _>(0)?))
                .collect()
        })
    }

    /// A case's notes, oldest first.
    pub async fn case_notes(&self, case_id: i64) -> Result<Vec<CaseNote>> {
        self.case(case_id).await?;
        dispatch!(self, pool => {
            sqlx::query(
                "SELECT id, case_id, author_id, content, created_at FROM case_notes WHERE case_id = $1 ORDER BY id",
            )
            .bind(case_id)
            .fetch_all(pool.ex())
            .await?
            .iter()
            .map(|r| {
                Ok(CaseNote {
                    id: r.try_get(0)?,
                    case_id: r.try_get(1)?,
                    author_id: r.try_get(2)?,
                    content: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                })
            })
            .collect()
        })
    }

    /// Changes a case's title, description or priority (only those given).
    pub async fn update_case(
        &self,
        by: &Principal,
        id: i64,
        title: Option<&str>,
        description: Option<&str>,
        priority: Option<&str>,
    ) -> Result<Case> {
        check_case_fields(title, priority)?;
        let before = self.case(id).await?;
        let now = Utc::now().trunc_subsecs(6);
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "UPDATE cases SET title = COALESCE($1, title), description = COALESCE($2, description), \
                 priority = COALESCE($3, priority), updated_at = $4 WHERE id = $5",
            )
            .bind(title.map(str::trim))
            .bind(description)
            .bind(priority)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let entry = by.entry("CASE_UPDATED", "case", Some(id.to_string()), Outcome::Allowed,
                json!({"title": {"from": before.title, "to": title},
                       "description_changed": description.is_some(),
                       "priority": {"from": before.priority, "to": priority}}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
        });
        self.case(id).await
    }

    /// Adds a note to a case; returns its id.
    pub async fn add_case_note(&self, by: &Principal, case_id: i64, content: &str) -> Result<i64> {
        if content.trim().is_empty() {
            return Err(Error::invalid("content", "must not be empty"));
        }
        let user = user_of(by)?;
        self.case(case_id).await?;
        let now = Utc::now().trunc_subsecs(6);
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let id: i64 = sqlx::query(
                "INSERT INTO case_notes (case_id, author_id, content, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(case_id)
            .bind(user)
            .bind(content)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            let entry = by.entry("CASE_NOTE_ADDED", "case", Some(case_id.to_string()), Outcome::Allowed,
                json!({"note_id": id}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Tags a case (the tag is created on first use); tagging twice is 409.
    pub async fn tag_case(&self, by: &Principal, case_id: i64, tag: &str) -> Result<()> {
        let tag = tag.trim();
        if tag.is_empty() || tag.len() > 64 {
            return Err(Error::invalid("tag", "must be 1 to 64 characters"));
        }
        self.case(case_id).await?;
        let now = Utc::now().trunc_subsecs(6);
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("INSERT INTO tags (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(tag)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO case_tags (case_id, tag_id, created_at) SELECT $1, id, $2 FROM tags WHERE name = $3",
            )
            .bind(case_id)
            .bind(now)
            .bind(tag)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::or_conflict(e, format!("tag '{tag}' on case {case_id}")))?;
            let entry = by.entry("CASE_TAGGED", "case", Some(case_id.to_string()), Outcome::Allowed,
                json!({"tag": tag}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            Ok(())
        })
    }
}
