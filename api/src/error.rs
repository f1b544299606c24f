use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vigil_engine::{Error as EngineError, LineError};

/// An error answer: status, a stable code, a message for people, and where in the body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub errors: Vec<LineError>,
    pub retry_after: Option<u32>,
}

#[derive(Serialize)]
struct LineErrorBody<'a> {
    line: usize,
    #[serde(skip_serializing_if = "is_zero")]
    column: usize,
    reason: &'a str,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<LineErrorBody<'a>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request too large",
            format!("request body exceeds the limit of {limit} bytes"),
        )
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after = Some(1);
        e
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Parse(line) => {
                let mut api = Self::bad_request(line.to_string());
                api.errors = vec![line];
                api
            }
            EngineError::ParseMany {
                first,
                count,
                errors,
            } => {
                let mut api = Self::bad_request(format!("{count} invalid lines; first: {first}"));
                api.errors = errors;
                api
            }
            e @ (EngineError::TypeConflict { .. }
            | EngineError::InvalidName { .. }
            | EngineError::NotUtf8 { .. }) => Self::bad_request(e.to_string()),
            e @ EngineError::Overloaded { .. } => Self::overloaded(e.to_string()),
            EngineError::ShuttingDown => Self::overloaded("server is shutting down"),
            EngineError::Wal(vigil_wal::Error::Poisoned { .. }) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the write-ahead log failed and accepts no writes; see /health and the server log",
            ),
            other => {
                tracing::error!(error = %other, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl From<vigil_relational::Error> for ApiError {
    fn from(e: vigil_relational::Error) -> Self {
        use vigil_relational::Error as E;
        match e {
            E::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, "not found", e.to_string()),
            E::Invalid { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
            }
            E::Conflict { .. } => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            E::Denied(_) => Self::new(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
            E::Unauthenticated => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string())
            }
            other => {
                tracing::error!(error = %other, "side store error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                    "side store error; see the server log",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            code: self.code,
            message: &self.message,
            line: self.errors.first().map(|e| e.line).filter(|&l| l > 0),
            errors: self
                .errors
                .iter()
                .map(|e| LineErrorBody {
                    line: e.line,
                    column: e.column,
                    reason: &e.reason,
                })
                .collect(),
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
