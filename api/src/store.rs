//! Side store routes: systems, alert settings, alerts, cases, tickets, comments, links,
//! audit, users and tokens. Handlers parse, call [`vigil_relational::Db`], and answer
//! JSON; the auth middleware has already checked the caller's role.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use vigil_relational::list::{self, FromRows, Resource};
use vigil_relational::{
    AlertSettings, AuditRow, Inventory, ListParams, NewTicket, Principal, Role, TicketPatch,
};

use crate::error::ApiError;
use crate::http::AppState;

type Answer = Result<Response, ApiError>;
type Me = Extension<Principal>;
type St = State<Arc<AppState>>;

/// Keys whose values auditors do not see.
const SENSITIVE_KEYS: [&str; 3] = ["email", "hashed_password", "token_hash"];

fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if SENSITIVE_KEYS.contains(&k.as_str()) && !v.is_null() {
                    *v = Value::String("[redacted]".into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// A JSON answer as `who` may see it: auditors get sensitive fields redacted.
fn answer(who: &Principal, status: StatusCode, body: impl serde::Serialize) -> Answer {
    let mut v = serde_json::to_value(body).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            e.to_string(),
        )
    })?;
    if who.role == Role::Auditor {
        redact(&mut v);
    }
    Ok((status, Json(v)).into_response())
}

fn ok(who: &Principal, body: impl serde::Serialize) -> Answer {
    answer(who, StatusCode::OK, body)
}

/// Parses a JSON body; an empty body reads as `{}`.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("invalid JSON body: {e}"),
        )
    })
}

async fn page<T: FromRows + serde::Serialize>(
    state: &AppState,
    who: &Principal,
    resource: &Resource,
    query: BTreeMap<String, String>,
) -> Answer {
    let params = ListParams::from_query(query)?;
    let page = state.db().list::<T>(resource, &params, None).await?;
    ok(who, page)
}

// ---- systems and settings ----

pub(crate) async fn systems(
    State(s): St,
    Extension(me): Me,
    Query(q): Query<BTreeMap<String, String>>,
) -> Answer {
    page::<vigil_relational::System>(&s, &me, &list::SYSTEMS, q).await
}

#[derive(Deserialize)]
pub(crate) struct SystemReport {
    hostname: String,
    #[serde(flatten)]
    inventory: Inventory,
}

pub(crate) async fn report_system(State(s): St, Extension(me): Me, b: Bytes) -> Answer {
    let r: SystemReport = body(&b)?;
    ok(
        &me,
        s.db().upsert_system(&me, &r.hostname, &r.inventory).await?,
    )
}

pub(crate) async fn system(State(s): St, Extension(me): Me, Path(id): Path<i64>) -> Answer {
    ok(&me, s.db().system(id).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SystemPatch {
    user_label: Option<String>,
    is_active: Option<bool>,
}

pub(crate) async fn patch_system(
    State(s): St,
    Extension(me): Me,
    Path(id): Path<i64>,
    b: Bytes,
) -> Answer {
    let p: SystemPatch = body(&b)?;
    ok(
        &me,
        s.db()
            .update_system(&me, id, p.user_label.as_deref(), p.is_active)
            .await?,
    )
}

pub(crate) async fn delete_system(State(s): St, Extension(me): Me, Path(id): Path<i64>) -> Answer {
    s.db().delete_system(&me, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Thresholds {
    cpu_threshold: f64,
    memory_threshold: f64,
    disk_threshold: f64,
}

async fn put_settings(s: &AppState, me: &Principal, system_id: Option<i64>, b: &Bytes) -> Answer {
    let t: Thresholds = body(b)?;
    let settings = AlertSettings {
        system_id,
        cpu_threshold: t.cpu_threshold,
        memory_threshold: t.memory_threshold,
        disk_threshold: t.disk_threshold,
    };
    ok(me, s.db().set_alert_settings(me, &settings).await?)
}

pub(crate) async fn global_settings(State(s): St, Extension(me): Me) -> Answer {
    ok(&me, s.db().alert_settings(None).await?)
}

pub(crate) async fn set_global_settings(State(s): St, Extension(me): Me, b: Bytes) -> Answer {
    put_settings(&s, &me, None, &b).await
}

pub(crate) async fn system_settings(
    State(s): St,
    Extension(me): Me,
    Path(id): Path<i64>,
) -> Answer {
    s.db().system(id).await?;
    ok(&me, s.db().alert_settings(Some(id)).await?)
}

pub(crate) async fn set_system_settings(
    State(s): St,
    Extension(me): Me,
    Path(id): Path<i64>,
    b: Bytes,
) -> Answer {
    put_settings(&s, &me, Some(id), &b).await
}

// ---- alerts ----

pub(crate) async fn alerts(
    State(s): St,
    Extension(me): Me,
    Query(q): Query<BTreeMap<String, String>>,
) -> Answer {
    page::<vigil_relational::Alert>(&s, &me, &list::ALERTS, q).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewAlert {
    system_id: Option<i64>,
    alert_type: String,
    severity: String,
    message: String,
}

pub(crate) async fn raise_alert(State(s): St, Extension(me): Me, b: Bytes) -> Answer {
    let a: NewAlert = body(&b)?;
    let alert = s
        .db()
        .raise_alert(&me, a.system_id, &a.alert_type, &a.severity, &a.message)
        .await?;
    answer(&me, StatusCode::CREATED, alert)
}

pub(crate) async fn alert(State(s): St, Extension(me): Me, Path(id): Path<i64>) -> Answer {
    ok(&me, s.db().alert(id).await?)
}

pub(crate) async fn acknowledge_alert(
    State(s): St,
    Extension(me): Me,
    Path(id): Path<i64>,
) -> Answer {
    ok(&me, s.db().set_alert_status(&me, id, "acknowledged").await?)
}

pub(crate) async fn resolve_alert(State(s): St, Extension(me): Me, Path(id): Path<i64>) -> Answer {
    ok(&me, s.db().set_alert_status(&me, id, "resolved").await?)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertTicket {
    priority: Option<String>,
    issue_type: Option<String>,
    assignee_id: Option<i64>,
}

/// 201 with the new ticket, or 200 with the one created before.
pub(crate) async fn alert_ticket(
    State(s): St,
    Extension(me): Me,
    Path(id): Path<i64>,
    b: Bytes,
) -> Answer {
    let opts: AlertTicket = body(&b)?;
    let alert = s.db().alert(id).await?;
    let mut title = format!("{} {}: {}", alert.severity, alert.alert_type, alert.message);
    if title.chars().count() > 200 {
        title = title.chars().take(199).collect::<String>() + "…";
    }
    let priority = opts.priority.or_else(|| {
        Some(
            match alert.severity.as_str() {
                "CRITICAL" => "critical",
                "WARNING" => "high",
                _ => "medium",
            }
            .to_string(),
        )
    });
    let new = NewTicket {
        title,
        description: alert.message.clone(),
        priority,
        issue_type: opts.issue_type,
        assignee_id: opts.assignee_id,
        system_id: alert.system_id,
        alert_id: Some(id),
        project_id: None,
    };
    let (ticket, created) = s.db().create_ticket(&me, &new).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    answer(&me, status, ticket)
}

// ---- cases ----

pub(crate) async fn cases(
    State(s): St,
    Extension(me): Me,
    Query(q): Query<BTreeMap<String, String>>,
) -> Answer {
    let params = ListParams::from_query(q)?;
    ok(&me, s.db().cases(&params).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCase {
    title: String,
    #[serde(default)]
    description: String,
    priority: Option<String>,
}

pub(crate) async fn create_case(State(s): St, Extension(me): Me, b: Bytes) -> Answer {
    let c: NewCase = body(&b)?;
    let case = s
        .db()
        .create_case(&me, &c.title, &c.description, c.priority.as_deref())
        .await?;
    answer(&me, StatusCode::CREATED, case)
}

pub(crate) async fn case(State(s): St, Extension(me): Me, Path(id): Path<i64>) -> Answer {
    ok(&me, s.db().case(id).await?)
}

/// `Some(None)` for an explicit `null`.
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CasePatch {
    title: Option<String>,
    description: Option<String>,
    priority: Option<String>,
    status: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    assigned_to: Option<Option<i64>>,
}

pub(crate) async fn patch_case(
    State(s): St,
    Extension(me): Me,
    Path(id): Path<i64>,
    b: Bytes,
) -> Answer {
    let p: CasePatch = body(&b)?;
    let mut case = s.db().case(id).await?;
    if p.title.is_some() || p.description.is_some() || p.priority.is_some() {
        case = s
            .db()
            .update_case(
                &me,
                id,
                p.title.as_deref(),
                p.description.as_deref(),
                p.priority.as_deref(),
            )
            .await?;
    }
    if let Some(status) = &p.status {
        case = s.db().set_case_status(&me, id, status).await?;
    }
    if let Some(user) = p.assigned_to {
        case = s.db().assign_case(&me, id, user).await?;
    }
    ok(&me, case)
}

pub(crate) async fn case_events(State(s): St, Extension(me): Me, Path(id): Path<i64>) -> Answer {
    s.db().case(id).await?;
    ok(&me, json!({"items": s.db().case_events(id).await?}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventRef {
    event_id: String,
}

pub(crate) async fn link_event(
    State(s): St,
    Extension(me): Me,
    Path(id): Path<i64>,
    b: Bytes,
) -> Answer {
    let e: EventRef = body(&b)?;
    s.db().link_event(&me, id, &e.event_id).await?;
    answer(
        &me,
        StatusCode::CREATED,
        json!({"case_id": id, "event_id": e.event_id}),
    )
}

pub(crate) async fn unlink_event(
    State(s): St,
    Extension(me): Me,
    Path((id, event_id)): Path<(i64, String)>,
) -> Answer {
    s.db().unlink_event(&me, id, &event_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Content {
    content: String,
}

pub(crate) async fn case_notes(State(s): St, Extension(me): Me, Path(id): Path<i64>) -> Answer {
    ok(&me, json!({"items": s.db().case_notes(id).await?}))
}

pub(crate) async fn add_case_note(
    State(s): St,
    Extension(me): Me,
    Path(id): Path<i64>,
    b: Bytes,
) -> Answer {
    let n: Content = body(&b)?;
    let note = s.db().add_case_note(&me, id, &n.content).await?;
    answer(&me, StatusCode::CREATED, json!({"id": note, "case_id": id}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TagBody {
    tag: String,
}

pub(crate) async fn tag_case(
    State(s): St,
    Extension(me): Me,
    Path(id): Path<i64>,
    b: Bytes,
) -> Answer {
    let t: TagBody = body(&b)?;
    s.db().tag_case(&me, id, &t.tag).await?;
    ok(&me, s.db().case(id).await?)
}

// ---- tickets and comments ----

pub(crate) async fn tickets(
    State(s): St,
    Extension(me): Me,
    Query(q): Query<BTreeMap<String, String>>,
) -> Answer {
    page::<vigil_relational::Ticket>(&s, &me, &list::TICKETS, q).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTicketBody {
    title: String,
    #[serde(default)]
    description: String,
    priority: Option<String>,
    issue_type: Option<String>,
    assignee_id: Option<i64>,
    system_id: Option<i64>,
    alert_id: Option<i64>,
    project_id: Option<i64>,
}

pub(crate) async fn create_ticket(State(s): St, Extension(me): Me, b: Bytes) -> Answer {
    let t: NewTicketBody = body(&b)?;
    let new = NewTicket {
        title: t.title,
        description: t.description,
        priority: t.priority,
        issue_type: t.issue_type,
        assignee_id: t.assignee_id,
        system_id: t.system_id,
        alert_id: t.alert_id,
        project_id: t.project_id,
    };
    let (ticket, created) = s.db().create_ticket(&me, &new).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    answer(&me, status, ticket)
}

pub(crate) async fn ticket(State(s): St, Extension(me): Me, Path(id): Path<i64>) -> Answer {
    ok(&me, s.db().ticket(id).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TicketPatchBody {
    status: Option<String>,
    priority: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    assignee_id: Option<Option<i64>>,
    title: Option<String>,
    description: Option<String>,
}

pub(crate) async fn patch_ticket(
    State(s): St,
    Extension(me): Me,
    Path(id): Path<i64>,
    b: Bytes,
) -> Answer {
    let p: TicketPatchBody = body(&b)?;
    let patch = TicketPatch {
        status: p.status,
        priority: p.priority,
        assignee_id: p.assignee_id,
        title: p.title,
        description: p.description,
    };
    ok(&me, s.db().patch_ticket(&me, id, &patch).await?)
}

pub(crate) async fn comments(State(s): St, Extension(me): Me, Path(id): Path<i64>) -> Answer {
    ok(&me, json!({"items": s.db().comments(&me, id).await?}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewComment {
    content: String,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    auditor_visible: bool,
}

pub(crate) async fn add_comment(
    State(s): St,
    Extension(me): Me,
    Path(id): Path<i64>,
    b: Bytes,
) -> Answer {
    let c: NewComment = body(&b)?;
    let comment = s
        .db()
        .add_comment(&me, id, &c.content, c.internal, c.auditor_visible)
        .await?;
    answer(&me, StatusCode::CREATED, comment)
}

pub(crate) async fn edit_comment(
    State(s): St,
    Extension(me): Me,
    Path(id): Path<i64>,
    b: Bytes,
) -> Answer {
    let c: Content = body(&b)?;
    s.db().edit_comment(&me, id, &c.content).await?;
    ok(&me, json!({"id": id, "content": c.content}))
}

pub(crate) async fn comment_history(
    State(s): St,
    Extension(me): Me,
    Path(id): Path<i64>,
) -> Answer {
    let items: Vec<Value> = s
        .db()
        .comment_history(id)
        .await?
        .into_iter()
        .map(|(content, at)| json!({"content": content, "replaced_at": at}))
        .collect();
    ok(&me, json!({ "items": items }))
}

// ---- links ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkQuery {
    source_type: String,
    source_id: String,
}

pub(crate) async fn links(State(s): St, Extension(me): Me, Query(q): Query<LinkQuery>) -> Answer {
    ok(
        &me,
        json!({"items": s.db().links(&q.source_type, &q.source_id).await?}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewLink {
    source_type: String,
    source_id: String,
    linkable_type: String,
    linkable_id: String,
    #[serde(default = "relates_to")]
    relation: String,
}

fn relates_to() -> String {
    "relates_to".into()
}

pub(crate) async fn add_link(State(s): St, Extension(me): Me, b: Bytes) -> Answer {
    let l: NewLink = body(&b)?;
    let link = s
        .db()
        .add_link(
            &me,
            (&l.source_type, &l.source_id),
            (&l.linkable_type, &l.linkable_id),
            &l.relation,
        )
        .await?;
    answer(&me, StatusCode::CREATED, link)
}

pub(crate) async fn remove_link(State(s): St, Extension(me): Me, Path(id): Path<i64>) -> Answer {
    s.db().remove_link(&me, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- audit, users, tokens ----

pub(crate) async fn audit(
    State(s): St,
    Extension(me): Me,
    Query(q): Query<BTreeMap<String, String>>,
) -> Answer {
    page::<AuditRow>(&s, &me, &list::AUDIT, q).await
}

pub(crate) async fn verify_audit(State(s): St, Extension(me): Me) -> Answer {
    let report = s.db().verify_audit().await?;
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    answer(&me, status, report)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    email: String,
    password: String,
    display_name: Option<String>,
    roles: Vec<String>,
}

pub(crate) async fn create_user(State(s): St, Extension(me): Me, b: Bytes) -> Answer {
    let u: NewUser = body(&b)?;
    let roles = u
        .roles
        .iter()
        .map(|r| r.parse::<Role>())
        .collect::<Result<Vec<_>, _>>()?;
    let user = s
        .db()
        .create_user(
            &me,
            &u.email,
            &u.password,
            u.display_name.as_deref(),
            &roles,
        )
        .await?;
    answer(&me, StatusCode::CREATED, user)
}

pub(crate) async fn users(State(s): St, Extension(me): Me) -> Answer {
    ok(&me, json!({"items": s.db().users().await?}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserPatch {
    is_active: bool,
}

/// Deactivating a user also ends their tokens at once (remembered tokens are forgotten).
pub(crate) async fn patch_user(
    State(s): St,
    Extension(me): Me,
    Path(id): Path<i64>,
    b: Bytes,
) -> Answer {
    let p: UserPatch = body(&b)?;
    let user = s.db().set_user_active(&me, id, p.is_active).await?;
    s.auth.forget();
    ok(&me, user)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    name: String,
    role: String,
    user_id: Option<i64>,
    expires_at: Option<DateTime<Utc>>,
}

pub(crate) async fn tokens(State(s): St, Extension(me): Me) -> Answer {
    ok(&me, json!({"items": s.db().tokens().await?}))
}

/// 201 with the token and its secret, which is not stored and not shown again.
pub(crate) async fn create_token(State(s): St, Extension(me): Me, b: Bytes) -> Answer {
    let t: NewToken = body(&b)?;
    let role: Role = t.role.parse()?;
    let (token, secret) = s
        .db()
        .create_token(&me, &t.name, role, t.user_id, t.expires_at, None)
        .await?;
    answer(
        &me,
        StatusCode::CREATED,
        json!({"token": token, "secret": secret}),
    )
}

pub(crate) async fn revoke_token(State(s): St, Extension(me): Me, Path(id): Path<i64>) -> Answer {
    s.db().revoke_token(&me, id).await?;
    s.auth.forget();
    Ok(StatusCode::NO_CONTENT.into_response())
}
