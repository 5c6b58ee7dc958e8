//! The admin listener: `/ready`, `/live`, `/config_dump`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, Request, Response, StatusCode, header};
use mesh_core::http::{Body, full};
use mesh_core::reload::SnapshotHandle;
use tower::util::BoxCloneSyncService;

use crate::server::HttpService;
use crate::stack::RoutingState;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// The configuration.
    pub snapshots: SnapshotHandle,
    /// The compiled routes.
    pub routing: Arc<RoutingState>,
    /// Set once every listener is bound and cleared when draining starts.
    pub ready: Arc<AtomicBool>,
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<bytes::Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

fn handle(state: &AdminState, req: &Request<Body>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n");
    }
    match req.uri().path() {
        "/live" => reply(StatusCode::OK, "text/plain", "live\n"),
        "/ready" => {
            if state.ready.load(Ordering::Acquire) {
                reply(StatusCode::OK, "text/plain", "ready\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }
        }
        "/config_dump" => {
            let snapshot = state.snapshots.load();
            let mut dump = snapshot.to_json();
            let table = state.routing.table.load();
            dump["routeCompileErrors"] = table
                .errors
                .iter()
                .map(|e| serde_json::Value::String(e.to_string()))
                .collect();
            let (ok, failed) = state.snapshots.reload_counts();
            dump["reloads"] = serde_json::json!({ "succeeded": ok, "refused": failed });
            if let Some(failure) = state.snapshots.last_failure() {
                dump["lastRefusedReload"] = serde_json::json!({
                    "keptGeneration": failure.kept_generation,
                    "diagnostics": failure.diagnostics,
                });
            }
            match serde_json::to_vec_pretty(&dump) {
                Ok(bytes) => reply(StatusCode::OK, "application/json", bytes),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string(),
                ),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin endpoints: /ready /live /config_dump\n",
        ),
    }
}

/// The admin service.
pub fn service(state: AdminState) -> HttpService {
    BoxCloneSyncService::new(tower::service_fn(move |req: Request<Body>| {
        let resp = handle(&state, &req);
        async move { Ok::<_, Infallible>(resp) }
    }))
}
