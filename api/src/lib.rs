//! `vigil-api`: Vigil's HTTP interface.
//!
//! Routes: line protocol writes (`/api/v1/write` and the InfluxDB-compatible `/write` and
//! `/api/v2/write`), events (`/api/v1/events`), SQL (`/api/v1/query`), `/health` and
//! `/metrics`, the side store's records (systems, alerts, cases, tickets, comments, links,
//! audit, users, tokens; [`routes::ROUTES`] lists them all). Every route needs a token
//! whose role it admits ([`auth`]). Every error maps
//! to a status code in one place ([`ApiError`]), and never leaks internals.

mod analytics;
pub mod auth;
mod error;
mod http;
mod metrics;
pub mod protocol;
mod query;
pub mod quic;
pub mod routes;
mod store;
pub mod tls;
mod write;

pub use error::ApiError;
pub use http::{AppState, HttpConfig, router};
