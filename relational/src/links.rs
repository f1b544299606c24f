//! Polymorphic links (any record to any other, `linkable_type` + `linkable_id`), projects
//! and assets.

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use crate::audit::Outcome;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::{Db, append_audit, dispatch};

/// Kinds of records a link may join.
pub const LINKABLE_TYPES: [&str; 9] = [
    "ticket", "case", "alert", "system", "event", "asset", "project", "url", "external",
];

/// A link from one record to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub id: i64,
    pub source_type: String,
    pub source_id: String,
    pub linkable_type: String,
    pub linkable_id: String,
    pub relation: String,
    pub created_by: Option<i64>,
    pub created_at: DateTime<Utc>,
}

fn check_type(field: &'static str, t: &str) -> Result<()> {
    if LINKABLE_TYPES.contains(&t) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("'{t}': expected one of {}", LINKABLE_TYPES.join(", ")),
        ))
    }
}

impl Db {
    /// Links `source` to `target`; the same pair twice is 409.
    pub async fn add_link(
        &self,
        by: &Principal,
        source: (&str, &str),
        target: (&str, &str),
        relation: &str,
    ) -> Result<Link> {
        check_type("source_type", source.0)?;
        check_type("linkable_type", target.0)?;
        for (field, id) in [("source_id", source.1), ("linkable_id", target.1)] {
            if id.is_empty() || id.len() > 500 {
                return Err(Error::invalid(field, "must be 1 to 500 characters"));
            }
        }
        let now = Utc::now().trunc_subsecs(6);
        let id: i64 = dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let id: i64 = sqlx::query(
                "INSERT INTO links (source_type, source_id, linkable_type, linkable_id, relation, created_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(source.0)
            .bind(source.1)
            .bind(target.0)
            .bind(target.1)
            .bind(relation)
            .bind(by.user_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| Error::or_conflict(e, format!("a link from {} {} to {} {}", source.0, source.1, target.0, target.1)))?
            .try_get(0)?;
            let entry = by.entry("LINK_ADDED", source.0, Some(source.1.to_string()), Outcome::Allowed,
                json!({"linkable_type": target.0, "linkable_id": target.1, "relation": relation}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            id
        });
        Ok(Link {
            id,
            source_type: source.0.into(),
            source_id: source.1.into(),
            linkable_type: target.0.into(),
            linkable_id: target.1.into(),
            relation: relation.into(),
            created_by: by.user_id,
            created_at: now,
        })
    }

    /// The links from a record, oldest first.
    pub async fn links(&self, source_type: &str, source_id: &str) -> Result<Vec<Link>> {
        check_type("source_type", source_type)?;
        dispatch!(self, pool => {
            sqlx::query(
                "SELECT id, source_type, source_id, linkable_type, linkable_id, relation, created_by, created_at \
                 FROM links WHERE source_type = $1 AND source_id = $2 ORDER BY id",
            )
            .bind(source_type)
            .bind(source_id)
            .fetch_all(pool.ex())
            .await?
            .iter()
            .map(|r| {
                Ok(Link {
                    id: r.try_get(0)?,
                    source_type: r.try_get(1)?,
                    source_id: r.try_get(2)?,
                    linkable_type: r.try_get(3)?,
                    linkable_id: r.try_get(4)?,
                    relation: r.try_get(5)?,
                    created_by: r.try_get(6)?,
                    created_at: r.try_get(7)?,
                })
            })
            .collect()
        })
    }

    /// Removes a link.
    pub async fn remove_link(&self, by: &Principal, id: i64) -> Result<()> {
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query("DELETE FROM links WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(Error::not_found("link", id));
            }
            let entry = by.entry("LINK_REMOVED", "link", Some(id.to_string()), Outcome::Allowed, json!({}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Creates a project (unique name); returns its id.
    pub async fn create_project(
        &self,
        by: &Principal,
        name: &str,
        description: &str,
    ) -> Result<i64> {
        if name.trim().is_empty() || name.len() > 200 {
            return Err(Error::invalid("name", "must be 1 to 200 characters"));
        }
        let now = Utc::now().trunc_subsecs(6);
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let id: i64 = sqlx::query(
                "INSERT INTO projects (name, description, created_at, updated_at) VALUES ($1, $2, $3, $3) RETURNING id",
            )
            .bind(name.trim())
            .bind(description)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| Error::or_conflict(e, format!("a project named '{}'", name.trim())))?
            .try_get(0)?;
            let entry = by.entry("PROJECT_CREATED", "project", Some(id.to_string()), Outcome::Allowed,
                json!({"name": name.trim()}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Creates an asset (serial numbers are unique when given); returns its id.
    pub async fn create_asset(
        &self,
        by: &Principal,
        name: &str,
        asset_type: &str,
        serial_number: Option<&str>,
    ) -> Result<i64> {
        if name.trim().is_empty() || asset_type.trim().is_empty() {
            return Err(Error::invalid(
                "name",
                "name and asset_type must not be empty",
            ));
        }
        let now = Utc::now().trunc_subsecs(6);
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let id: i64 = sqlx::query(
                "INSERT INTO assets (name, asset_type, serial_number, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) RETURNING id",
            )
            .bind(name.trim())
            .bind(asset_type.trim())
            .bind(serial_number)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| Error::or_conflict(e, "an asset with this serial number"))?
            .try_get(0)?;
            let entry = by.entry("ASSET_CREATED", "asset", Some(id.to_string()), Outcome::Allowed,
                json!({"name": name.trim(), "asset_type": asset_type.trim(), "serial_number": serial_number}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            Ok(id)
        })
    }
}
