//! Systems (the machines agents run on), their alert thresholds, and alerts.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

use crate::audit::Outcome;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::list::{ListParams, MAX_LIMIT};
use crate::{Db, append_audit, dispatch};

/// What an agent reports about its machine (`vigil ship --host-metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub os_name: Option<String>,
    pub cpu_name: Option<String>,
    pub cpu_cores: Option<i64>,
    pub total_memory_gb: Option<f64>,
    pub total_disk_gb: Option<f64>,
    pub agent_version: Option<String>,
}

/// A system as stored (the inventory fields most asked for).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct System {
    pub id: i64,
    pub hostname: String,
    pub user_label: Option<String>,
    pub os_name: Option<String>,
    pub cpu_name: Option<String>,
    pub cpu_cores: Option<i64>,
    pub total_memory_gb: Option<f64>,
    pub total_disk_gb: Option<f64>,
    pub agent_version: Option<String>,
    pub is_active: bool,
    pub last_seen: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Thresholds in percent; `system_id` none is the global default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AlertSettings {
    pub system_id: Option<i64>,
    pub cpu_threshold: f64,
    pub memory_threshold: f64,
    pub disk_threshold: f64,
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub id: i64,
    pub system_id: Option<i64>,
    pub alert_type: String,
    pub severity: String,
    pub message: String,
    pub status: String,
    pub acknowledged_by: Option<i64>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

pub(crate) const SYSTEM_COLUMNS: &str = "id, hostname, user_label, os_name, cpu_name, cpu_cores, total_memory_gb, \
    total_disk_gb, agent_version, is_active, last_seen, created_at";
pub(crate) const ALERT_COLUMNS: &str = "id, system_id, alert_type, severity, message, status, acknowledged_by, \
    acknowledged_at, resolved_at, created_at";

macro_rules! system_from_row {
    ($r:expr) => {{
        let r = $r;
        System {
            id: r.try_get(0)?,
            hostname: r.try_get(1)?,
            user_label: r.try_get(2)?,
            os_name: r.try_get(3)?,
            cpu_name: r.try_get(4)?,
            cpu_cores: r.try_get(5)?,
            total_memory_gb: r.try_get(6)?,
            total_disk_gb: r.try_get(7)?,
            agent_version: r.try_get(8)?,
            is_active: r.try_get(9)?,
            last_seen: r.try_get(10)?,
            created_at: r.try_get(11)?,
        }
    }};
}

macro_rules! alert_from_row {
    ($r:expr) => {{
        let r = $r;
        Alert {
            id: r.try_get(0)?,
            system_id: r.try_get(1)?,
            alert_type: r.try_get(2)?,
            severity: r.try_get(3)?,
            message: r.try_get(4)?,
            status: r.try_get(5)?,
            acknowledged_by: r.try_get(6)?,
            acknowledged_at: r.try_get(7)?,
            resolved_at: r.try_get(8)?,
            created_at: r.try_get(9)?,
        }
    }};
}

crate::from_rows!(System, system_from_row);
crate::from_rows!(Alert, alert_from_row);

fn check_threshold(field: &'static str, v: f64) -> Result<()> {
    if (0.0..=100.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{v} is not a percentage (0 to 100)"),
        ))
    }
}

impl Db {
    /// Registers a system seen by ingest, or refreshes its inventory and `last_seen`.
    pub async fn upsert_system(
        &self,
        by: &Principal,
        hostname: &str,
        inv: &Inventory,
    ) -> Result<System> {
        if hostname.trim().is_empty() || hostname.len() > 255 {
            return Err(Error::invalid("hostname", "must be 1 to 255 characters"));
        }
        let now = Utc::now().trunc_subsecs(6);
        let id: i64 = dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let existing = sqlx::query("SELECT id FROM systems WHERE hostname = $1")
                .bind(hostname)
                .fetch_optional(&mut *tx)
                .await?;
            let id: i64 = sqlx::query(
                "INSERT INTO systems (hostname, os_name, cpu_name, cpu_cores, total_memory_gb, total_disk_gb, \
                 agent_version, last_seen, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8) \
                 ON CONFLICT (hostname) DO UPDATE SET os_name = COALESCE(excluded.os_name, systems.os_name), \
                 cpu_name = COALESCE(excluded.cpu_name, systems.cpu_name), \
                 cpu_cores = COALESCE(excluded.cpu_cores, systems.cpu_cores), \
                 total_memory_gb = COALESCE(excluded.total_memory_gb, systems.total_memory_gb), \
                 total_disk_gb = COALESCE(excluded.total_disk_gb, systems.total_disk_gb), \
                 agent_version = COALESCE(excluded.agent_version, systems.agent_version), \
                 last_seen = excluded.last_seen, updated_at = excluded.updated_at RETURNING id",
            )
            .bind(hostname)
            .bind(&inv.os_name)
            .bind(&inv.cpu_name)
            .bind(inv.cpu_cores)
            .bind(inv.total_memory_gb)
            .bind(inv.total_disk_gb)
            .bind(&inv.agent_version)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            let action = if existing.is_some() { "SYSTEM_SEEN" } else { "SYSTEM_REGISTERED" };
            let entry = by.entry(action, "system", Some(id.to_string()), Outcome::Allowed,
                json!({"hostname": hostname, "inventory": inv}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            id
        });
        self.system(id).await
    }

    pub async fn system(&self, id: i64) -> Result<System> {
        dispatch!(self, pool => {
            let r = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {SYSTEM_COLUMNS} FROM systems WHERE id = $1")))
                .bind(id)
                .fetch_optional(pool.ex())
                .await?
                .ok_or_else(|| Error::not_found("system", id))?;
            Ok(system_from_row!(&r))
        })
    }

    /// Active systems (or all), by id, paged by cursor (`after` the last id): a
    /// [`Db::list`] of [`crate::list::SYSTEMS`].
    pub async fn systems(
        &self,
        include_inactive: bool,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<System>> {
        let params = ListParams {
            sort: Some("id".into()),
            limit: Some(limit.clamp(1, MAX_LIMIT)),
            ..ListParams::default()
        }
        .filter("is_active", if include_inactive { "any" } else { "true" });
        let after = after.map(|id| format!("id > {id}"));
        Ok(self
            .list(&crate::list::SYSTEMS, &params, after.as_deref())
            .await?
            .items)
    }

    /// Sets a system's label, or deactivates it (soft delete).
    pub async fn update_system(
        &self,
        by: &Principal,
        id: i64,
        label: Option<&str>,
        active: Option<bool>,
    ) -> Result<System> {
        let before = self.system(id).await?;
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "UPDATE systems SET user_label = COALESCE($1, user_label), is_active = COALESCE($2, is_active), \
                 updated_at = $3 WHERE id = $4",
            )
            .bind(label)
            .bind(active)
            .bind(Utc::now().trunc_subsecs(6))
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let entry = by.entry("SYSTEM_UPDATED", "system", Some(id.to_string()), Outcome::Allowed,
                json!({"user_label": {"from": before.user_label, "to": label}, "is_active": {"from": before.is_active, "to": active}}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
        });
        self.system(id).await
    }

    /// Deletes a system and, by cascade, its alerts, tickets, settings and rules.
    pub async fn delete_system(&self, by: &Principal, id: i64) -> Result<()> {
        let before = self.system(id).await?;
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("DELETE FROM systems WHERE id = $1").bind(id).execute(&mut *tx).await?;
            let entry = by.entry("SYSTEM_DELETED", "system", Some(id.to_string()), Outcome::Allowed,
                json!({"hostname": before.hostname}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// The thresholds in force for a system: its own, else the global ones.
    pub async fn alert_settings(&self, system_id: Option<i64>) -> Result<AlertSettings> {
        dispatch!(self, pool => {
            let r = sqlx::query(
                "SELECT system_id, cpu_threshold, memory_threshold, disk_threshold FROM alert_settings \
                 WHERE system_id = $1 OR system_id IS NULL ORDER BY system_id IS NULL LIMIT 1",
            )
            .bind(system_id)
            .fetch_one(pool.ex())
            .await?;
            Ok(AlertSettings {
                system_id: r.try_get(0)?,
                cpu_threshold: r.try_get(1)?,
                memory_threshold: r.try_get(2)?,
                disk_threshold: r.try_get(3)?,
            })
        })
    }

    /// Sets the global thresholds (`system_id` none) or a system's own.
    pub async fn set_alert_settings(
        &self,
        by: &Principal,
        s: &AlertSettings,
    ) -> Result<AlertSettings> {
        check_threshold("cpu_threshold", s.cpu_threshold)?;
        check_threshold("memory_threshold", s.memory_threshold)?;
        check_threshold("disk_threshold", s.disk_threshold)?;
        if let Some(id) = s.system_id {
            self.system(id).await?;
        }
        let now = Utc::now().trunc_subsecs(6);
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE alert_settings SET cpu_threshold = $1, memory_threshold = $2, disk_threshold = $3, \
                 updated_at = $4 WHERE system_id IS NOT DISTINCT FROM $5",
            )
            .bind(s.cpu_threshold)
            .bind(s.memory_threshold)
            .bind(s.disk_threshold)
            .bind(now)
            .bind(s.system_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                sqlx::query(
                    "INSERT INTO alert_settings (system_id, cpu_threshold, memory_threshold, disk_threshold, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
                )
                .bind(s.system_id)
                .bind(s.cpu_threshold)
                .bind(s.memory_threshold)
                .bind(s.disk_threshold)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            let entry = by.entry("ALERT_SETTINGS_UPDATED", "alert_settings",
                s.system_id.map(|i| i.to_string()), Outcome::Allowed, json!(s));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
        });
        self.alert_settings(s.system_id).await
    }

    /// Raises an alert (status firing).
    pub async fn raise_alert(
        &self,
        by: &Principal,
        system_id: Option<i64>,
        alert_type: &str,
        severity: &str,
        message: &str,
    ) -> Result<Alert> {
        if !["CRITICAL", "WARNING", "INFO"].contains(&severity) {
            return Err(Error::invalid(
                "severity",
                format!("'{severity}': expected CRITICAL, WARNING or INFO"),
            ));
        }
        let now = Utc::now().trunc_subsecs(6);
        let id: i64 = dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let id: i64 = sqlx::query(
                "INSERT INTO alerts (system_id, alert_type, severity, message, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
            )
            .bind(system_id)
            .bind(alert_type)
            .bind(severity)
            .bind(message)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| Error::or_reference(e, "system_id"))?
            .try_get(0)?;
            let entry = by.entry("ALERT_RAISED", "alert", Some(id.to_string()), Outcome::Allowed,
                json!({"system_id": system_id, "alert_type": alert_type, "severity": severity}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            id
        });
        self.alert(id).await
    }

    pub async fn alert(&self, id: i64) -> Result<Alert> {
        dispatch!(self, pool => {
            let r = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1")))
                .bind(id)
                .fetch_optional(pool.ex())
                .await?
                .ok_or_else(|| Error::not_found("alert", id))?;
            Ok(alert_from_row!(&r))
        })
    }

    /// Alerts with `status` (or all), newest first, paged by cursor (`before` an id): a
    /// [`Db::list`] of [`crate::list::ALERTS`].
    pub async fn alerts(
        &self,
        status: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Alert>> {
        if let Some(s) = status
            && !["firing", "acknowledged", "resolved"].contains(&s)
        {
            return Err(Error::invalid(
                "status",
                format!("'{s}': expected firing, acknowledged or resolved"),
            ));
        }
        let mut params = ListParams {
            limit: Some(limit.clamp(1, MAX_LIMIT)),
            ..ListParams::default()
        };
        if let Some(s) = status {
            params = params.filter("status", s);
        }
        let before = before.map(|id| format!("id < {id}"));
        Ok(self
            .list(&crate::list::ALERTS, &params, before.as_deref())
            .await?
            .items)
    }

    /// Acknowledges a firing alert, or resolves a firing or acknowledged one.
    pub async fn set_alert_status(&self, by: &Principal, id: i64, status: &str) -> Result<Alert> {
        let before = self.alert(id).await?;
        let allowed = matches!(
            (before.status.as_str(), status),
            ("firing", "acknowledged") | ("firing", "resolved") | ("acknowledged", "resolved")
        );
        if !allowed {
            return Err(Error::invalid(
                "status",
                format!("an {} alert cannot become {status}", before.status),
            ));
        }
        let now = Utc::now().trunc_subsecs(6);
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "UPDATE alerts SET status = $1, is_resolved = $2, \
                 acknowledged_by = CASE WHEN $1 = 'acknowledged' THEN $3 ELSE acknowledged_by END, \
                 acknowledged_at = CASE WHEN $1 = 'acknowledged' THEN $4 ELSE acknowledged_at END, \
                 resolved_at = CASE WHEN $1 = 'resolved' THEN $4 ELSE resolved_at END, updated_at = $4 \
                 WHERE id = $5",
            )
            .bind(status)
            .bind(status == "resolved")
            .bind(by.user_id)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let action = if status == "resolved" { "ALERT_RESOLVED" } else { "ALERT_ACKNOWLEDGED" };
            let entry = by.entry(action, "alert", Some(id.to_string()), Outcome::Allowed,
                json!({"status": {"from": before.status, "to": status}}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
        });
        self.alert(id).await
    }
}
