//! Users (Argon2id password hashes), roles, and API tokens (stored as SHA-256 digests,
//! shown once, with a role and an optional expiry).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, SubsecRound, Utc};
use rand::RngCore;
use ring::digest::{SHA256, digest};
use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use crate::audit::{AuditEntry, Outcome, hex};
use crate::error::{Error, Result};
use crate::{Db, append_audit, dispatch};

/// What a token or user may do (rules in `docs/side-store.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Analyst,
    Viewer,
    Auditor,
    Agent,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Self::Admin,
        Self::Analyst,
        Self::Viewer,
        Self::Auditor,
        Self::Agent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Analyst => "analyst",
            Self::Viewer => "viewer",
            Self::Auditor => "auditor",
            Self::Agent => "agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "role",
                    format!("'{s}': expected admin, analyst, viewer, auditor or agent"),
                )
            })
    }
}

/// Who acts: recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// `token:<id>` or `user:<id>` or `system`.
    pub actor: String,
    pub role: Role,
    pub user_id: Option<i64>,
    pub token_id: Option<i64>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    /// When the token stops working.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    /// The server itself (first start, migrations).
    pub fn system() -> Self {
        Self {
            actor: "system".into(),
            role: Role::Admin,
            user_id: None,
            token_id: None,
            ip_address: None,
            user_agent: None,
            expires_at: None,
        }
    }

    /// The audit entry of something this principal did (or was refused).
    pub fn entry(
        &self,
        action: &str,
        target_type: &str,
        target_id: Option<String>,
        outcome: Outcome,
        metadata: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            actor: self.actor.clone(),
            action: action.into(),
            target_type: target_type.into(),
            target_id,
            outcome,
            metadata,
            ip_address: self.ip_address.clone(),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// A user, without the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub display_name: Option<String>,
    pub is_active: bool,
    pub roles: Vec<Role>,
    pub created_at: DateTime<Utc>,
}

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub user_id: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When it was revoked; revoked tokens stay listed.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// id, user_id, role, expires_at, revoked_at.
type TokenRow = (
    i64,
    Option<i64>,
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// The digest a token is stored and looked up by: lowercase hex SHA-256 of its text.
pub fn token_digest(secret: &str) -> String {
    hex(digest(&SHA256, secret.as_bytes()).as_ref())
}

/// A new token secret: `vgl_` and 32 random bytes in hex.
pub fn new_token_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("vgl_{}", hex(&bytes))
}

fn hash_password(password: &str) -> Result<String> {
    if password.chars().count() < 8 {
        return Err(Error::invalid("password", "must be at least 8 characters"));
    }
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

fn valid_email(email: &str) -> Result<()> {
    let ok = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "email",
            format!("'{email}' is not an e-mail address"),
        ))
    }
}

impl Db {
    /// Creates a user with `roles`; the password is stored as an Argon2id hash.
    pub async fn create_user(
        &self,
        by: &Principal,
        email: &str,
        password: &str,
        display_name: Option<&str>,
        roles: &[Role],
    ) -> Result<User> {
        valid_email(email)?;
        let hashed = hash_password(password)?;
        let now = Utc::now().trunc_subsecs(6);
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let id: i64 = sqlx::query(
                "INSERT INTO users (email, display_name, hashed_password, is_active, created_at, updated_at) \
                 VALUES ($1, $2, $3, TRUE, $4, $4) RETURNING id",
            )
            .bind(email)
            .bind(display_name)
            .bind(&hashed)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| Error::or_conflict(e, format!("a user with e-mail '{email}'")))?
            .try_get(0)?;
            for role in roles {
                sqlx::query(
                    "INSERT INTO user_roles (user_id, role_id, created_at) \
                     SELECT $1, id, $2 FROM roles WHERE name = $3",
                )
                .bind(id)
                .bind(now)
                .bind(role.as_str())
                .execute(&mut *tx)
                .await?;
            }
            let entry = by.entry(
                "USER_CREATED",
                "user",
                Some(id.to_string()),
                Outcome::Allowed,
                json!({"email": email, "roles": roles}),
            );
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            Ok::<_, Error>(())
        })?;
        let _ = now;
        self.user_by_email(email).await
    }

    /// The user with `email`.
    pub async fn user_by_email(&self, email: &str) -> Result<User> {
        let (id, display_name, is_active, created_at) = dispatch!(self, pool => {
            let row = sqlx::query(
                "SELECT id, display_name, is_active, created_at FROM users WHERE email = $1",
            )
            .bind(email)
            .fetch_optional(pool.ex())
            .await?
            .ok_or_else(|| Error::not_found("user", email))?;
            (
                row.try_get::<i64, _>(0)?,
                row.try_get::<Option<String>, _>(1)?,
                row.try_get::<bool, _>(2)?,
                row.try_get::<DateTime<Utc>, _>(3)?,
            )
        });
        let names: Vec<String> = dispatch!(self, pool => {
            sqlx::query(
                "SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
                 WHERE ur.user_id = $1 ORDER BY r.id",
            )
            .bind(id)
            .fetch_all(pool.ex())
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()?
        });
        Ok(User {
            id,
            email: email.to_string(),
            display_name,
            is_active,
            roles: names.iter().map(|n| n.parse()).collect::<Result<_>>()?,
            created_at,
        })
    }

    /// Every user with their roles, in id order (service users of tokens included).
    pub async fn users(&self) -> Result<Vec<User>> {
        let (users, roles) = dispatch!(self, pool => {
            let users = sqlx::query(
                "SELECT id, email, display_name, is_active, created_at FROM users ORDER BY id",
            )
            .fetch_all(pool.ex())
            .await?;
            let roles = sqlx::query(
                "SELECT ur.user_id, r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
                 ORDER BY ur.user_id, r.id",
            )
            .fetch_all(pool.ex())
            .await?;
            (
                users
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)))
                    .collect::<Result<Vec<(i64, String, Option<String>, bool, DateTime<Utc>)>>>()?,
                roles
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get::<String, _>(1)?.parse()?)))
                    .collect::<Result<Vec<(i64, Role)>>>()?,
            )
        });
        let mut roles_of: HashMap<i64, Vec<Role>> = HashMap::new();
        for (user, role) in roles {
            roles_of.entry(user).or_default().push(role);
        }
        Ok(users
            .into_iter()
            .map(|(id, email, display_name, is_active, created_at)| User {
                id,
                email,
                display_name,
                is_active,
                roles: roles_of.remove(&id).unwrap_or_default(),
                created_at,
            })
            .collect())
    }

    /// (De)activates a user: a deactivated user cannot log in, and their tokens (and the
    /// tokens of a service user) stop working. Soft: the user and what they did stay.
    pub async fn set_user_active(&self, by: &Principal, id: i64, active: bool) -> Result<User> {
        let email: String = dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let row = sqlx::query(
                "UPDATE users SET is_active = $1, updated_at = $2 WHERE id = $3 RETURNING email",
            )
            .bind(active)
            .bind(Utc::now().trunc_subsecs(6))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::not_found("user", id))?;
            let email: String = row.try_get(0)?;
            let action = if active { "USER_ACTIVATED" } else { "USER_DEACTIVATED" };
            let entry = by.entry(action, "user", Some(id.to_string()), Outcome::Allowed, json!({"is_active": active}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            email
        });
        self.user_by_email(&email).await
    }

    /// Checks a user's password; `None` for an unknown or inactive user or a wrong password.
    pub async fn check_password(&self, email: &str, password: &str) -> Result<Option<User>> {
        let stored: Option<(String, bool)> = dispatch!(self, pool => {
            match sqlx::query("SELECT hashed_password, is_active FROM users WHERE email = $1")
                .bind(email)
                .fetch_optional(pool.ex())
                .await?
            {
                Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
                None => None,
            }
        });
        let Some((hash, true)) = stored else {
            return Ok(None);
        };
        // Service users of tokens store no password ("!"): nobody logs in as them.
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return Ok(None);
        };
        if Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_err()
        {
            return Ok(None);
        }
        self.user_by_email(email).await.map(Some)
    }

    /// Creates an API token and returns it with its secret, which is not stored and
    /// cannot be shown again. `secret` stores a given secret instead of a new one (the
    /// admin token of the data directory).
    pub async fn create_token(
        &self,
        by: &Principal,
        name: &str,
        role: Role,
        user_id: Option<i64>,
        expires_at: Option<DateTime<Utc>>,
        secret: Option<String>,
    ) -> Result<(ApiToken, String)> {
        if name.trim().is_empty() || name.len() > 200 {
            return Err(Error::invalid("name", "must be 1 to 200 characters"));
        }
        if expires_at.is_some_and(|e| e <= Utc::now()) {
            return Err(Error::invalid("expires_at", "must be in the future"));
        }
        let secret = secret.unwrap_or_else(new_token_secret);
        let now = Utc::now().trunc_subsecs(6);
        let expires_at = expires_at.map(|e| e.trunc_subsecs(6));
        let digest = token_digest(&secret);
        let (id, user_id): (i64, i64) = dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            // A token of nobody gets a service user of its own, so that what it does
            // (tickets, comments) has an author.
            let user_id: i64 = match user_id {
                Some(u) => u,
                None => {
                    let email = format!("token-{}@tokens.vigil.invalid", &digest[..16]);
                    let u: i64 = sqlx::query(
                        "INSERT INTO users (email, display_name, hashed_password, is_active, created_at, updated_at) \
                         VALUES ($1, $2, '!', TRUE, $3, $3) RETURNING id",
                    )
                    .bind(&email)
                    .bind(format!("token: {name}"))
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| Error::or_conflict(e, "this token"))?
                    .try_get(0)?;
                    sqlx::query(
                        "INSERT INTO user_roles (user_id, role_id, created_at) \
                         SELECT $1, id, $2 FROM roles WHERE name = $3",
                    )
                    .bind(u)
                    .bind(now)
                    .bind(role.as_str())
                    .execute(&mut *tx)
                    .await?;
                    u
                }
            };
            let id: i64 = sqlx::query(
                "INSERT INTO api_tokens (user_id, name, token_hash, role, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(user_id)
            .bind(name)
            .bind(&digest)
            .bind(role.as_str())
            .bind(expires_at)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| Error::or_conflict(e, "this token"))?
            .try_get(0)?;
            let entry = by.entry(
                "TOKEN_CREATED",
                "api_token",
                Some(id.to_string()),
                Outcome::Allowed,
                json!({"name": name, "role": role, "user_id": user_id, "expires_at": expires_at}),
            );
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            (id, user_id)
        });
        Ok((
            ApiToken {
                id,
                name: name.to_string(),
                role,
                user_id: Some(user_id),
                expires_at,
                created_at: now,
                revoked_at: None,
            },
            secret,
        ))
    }

    /// The principal of a token secret; `Unauthenticated` when it is unknown, revoked or
    /// expired, or its user is deactivated.
    pub async fn authenticate(&self, secret: &str) -> Result<Principal> {
        let row: Option<TokenRow> = dispatch!(self, pool => {
            // A deactivated user's tokens stop working with it.
            match sqlx::query(
                "SELECT t.id, t.user_id, t.role, t.expires_at, t.revoked_at FROM api_tokens t \
                 LEFT JOIN users u ON u.id = t.user_id \
                 WHERE t.token_hash = $1 AND coalesce(u.is_active, TRUE)",
            )
            .bind(token_digest(secret))
            .fetch_optional(pool.ex())
            .await?
            {
                Some(r) => Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)),
                None => None,
            }
        });
        let Some((id, user_id, role, expires_at, revoked_at)) = row else {
            return Err(Error::Unauthenticated);
        };
        if revoked_at.is_some() || expires_at.is_some_and(|e| e <= Utc::now()) {
            return Err(Error::Unauthenticated);
        }
        Ok(Principal {
            actor: format!("token:{id}"),
            role: role.parse()?,
            user_id,
            token_id: Some(id),
            ip_address: None,
            user_agent: None,
            expires_at,
        })
    }

    /// Makes sure `secret` is a token with `role` (the data directory's admin token, tokens
    /// given on the command line); returns whether it was created now.
    pub async fn ensure_token(&self, name: &str, role: Role, secret: &str) -> Result<bool> {
        match self.authenticate(secret).await {
            Ok(p) if p.role == role => Ok(false),
            Ok(p) => Err(Error::Conflict {
                what: format!("token '{name}' with role {} (asked: {role})", p.role),
            }),
            Err(Error::Unauthenticated) => {
                self.create_token(
                    &Principal::system(),
                    name,
                    role,
                    None,
                    None,
                    Some(secret.to_string()),
                )
                .await?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Every token, newest first, without secrets (revoked ones marked).
    pub async fn tokens(&self) -> Result<Vec<ApiToken>> {
        dispatch!(self, pool => {
            sqlx::query(
                "SELECT id, name, role, user_id, expires_at, created_at, revoked_at FROM api_tokens ORDER BY id DESC",
            )
            .fetch_all(pool.ex())
            .await?
            .iter()
            .map(|r| {
                Ok(ApiToken {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    role: r.try_get::<String, _>(2)?.parse()?,
                    user_id: r.try_get(3)?,
                    expires_at: r.try_get(4)?,
                    created_at: r.try_get(5)?,
                    revoked_at: r.try_get(6)?,
                })
            })
            .collect()
        })
    }

    /// Revokes a token (it stays listed, marked revoked).
    pub async fn revoke_token(&self, by: &Principal, id: i64) -> Result<()> {
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(Utc::now().trunc_subsecs(6))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done == 0 {
                return Err(Error::not_found("token", id));
            }
            let entry = by.entry("TOKEN_REVOKED", "api_token", Some(id.to_string()), Outcome::Allowed, json!({}));
            append_audit!(tx, &entry)?;
            tx.commit().await?;
            Ok(())
        })
    }
}
