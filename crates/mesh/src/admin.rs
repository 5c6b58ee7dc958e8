//! The admin listener: `/ready`, `/live`, `/config_dump`, `/explain`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, Request, Response, StatusCode, header};
use mesh_core::http::{Body, full};
use mesh_core::identity::Workload;
use mesh_core::reload::SnapshotHandle;
use mesh_route::explain::ExplainQuery;
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
    /// The proxy's own workload: `/explain` explains its outbound requests.
    pub workload: Arc<Workload>,
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
        "/explain" => explain(state, req.uri().query().unwrap_or_default()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin endpoints: /ready /live /config_dump /explain\n",
        ),
    }
}

/// `/explain?method=GET&url=http://reviews/x&header=x-canary:true&namespace=prod&label=app=web&format=json`:
/// `mesh explain` against the live routing table. The caller defaults to
/// this proxy's own workload, as its outbound requests would be.
fn explain(state: &AdminState, query: &str) -> Response<Body> {
    let mut method = String::from("GET");
    let mut url = None;
    let mut headers = Vec::new();
    let mut namespace = state.workload.namespace.clone();
    let mut labels = Vec::new();
    let mut json = false;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "method" => method = value.into_owned(),
            "url" => url = Some(value.into_owned()),
            "header" => headers.push(value.into_owned()),
            "namespace" => namespace = value.into_owned(),
            "label" => labels.push(value.into_owned()),
            "format" => json = value == "json",
            other => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    format!(
                        "unknown parameter {other:?}: use method, url, header, namespace, label, format\n"
                    ),
                );
            }
        }
    }
    let Some(url) = url else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "give the request: /explain?method=GET&url=http://reviews/path\n",
        );
    };
    let labels = if labels.is_empty() {
        Ok(state.workload.labels.clone())
    } else {
        Workload::parse_labels(labels.iter().map(String::as_str))
    };
    let query =
        labels.and_then(|labels| ExplainQuery::parse(&method, &url, &headers, &namespace, labels));
    let query = match query {
        Ok(q) => q,
        Err(e) => return reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
    };
    let explained = query.explain(&state.routing.table.load());
    if json {
        match serde_json::to_vec_pretty(&explained) {
            Ok(bytes) => reply(StatusCode::OK, "application/json", bytes),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        }
    } else {
        reply(StatusCode::OK, "text/plain", explained.to_string())
    }
}

/// The admin service.
pub fn service(state: AdminState) -> HttpService {
    BoxCloneSyncService::new(tower::service_fn(move |req: Request<Body>| {
        let resp = handle(&state, &req);
        async move { Ok::<_, Infallible>(resp) }
    }))
}
