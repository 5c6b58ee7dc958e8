//! `mesh explain` golden-output tests, one per seed routing example.
//!
//! Each case runs the real binary from the workspace root on a seed block
//! (plus the demo endpoints, so destinations have endpoints) and compares
//! its output with `tests/golden/explain/<case>.txt`. After an intended
//! change of the output, regenerate with
//! `MESH_BLESS=1 cargo test -p mesh-sidecar --test explain_cli` and review the diff.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn explain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .current_dir(workspace())
        .arg("explain")
        .args(args)
        .output()
        .unwrap()
}

const ENDPOINTS: &str = "examples/seed-demo/endpoints.yaml";
const PRODUCTION: &str = "crates/mesh-sidecar/tests/golden/explain/production-endpoints.yaml";

fn seed(name: &str) -> String {
    format!("fixtures/seed/{name}.yaml")
}

/// Runs a case and compares (or, blessing, writes) its golden file.
fn golden(case: &str, args: &[&str]) {
    let out = explain(args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{case}: exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/explain")
        .join(format!("{case}.txt"));
    if std::env::var_os("MESH_BLESS").is_some() {
        std::fs::write(&path, &stdout).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with MESH_BLESS=1)", path.display()));
    assert_eq!(
        stdout,
        expected,
        "{case}: output differs from {}",
        path.display()
    );
}

#[test]
fn canary_split_without_the_header() {
    let vs = seed("02-virtual-service-traffic-routing");
    let dr = seed("03-destination-rule-load-balancing");
    golden(
        "canary-default",
        &[
            "-c",
            &vs,
            "-c",
            &dr,
            "-c",
            ENDPOINTS,
            "GET",
            "http://reviews:9080/",
        ],
    );
}

#[test]
fn canary_header_shadows_the_split() {
    let vs = seed("02-virtual-service-traffic-routing");
    let dr = seed("03-destination-rule-load-balancing");
    let args = [
        "-c",
        &vs,
        "-c",
        &dr,
        "-c",
        ENDPOINTS,
        "-H",
        "x-canary: true",
        "GET",
        "http://reviews:9080/reviews/1",
    ];
    golden("canary-header", &args);
}

#[test]
fn gateway_bound_virtual_service_is_not_in_force_for_sidecars() {
    let vs = seed("02-virtual-service-traffic-routing");
    golden(
        "api-vs-from-sidecar",
        &["-c", &vs, "GET", "http://api.example.com/v1/users"],
    );
}

#[test]
fn fault_injection_for_the_qa_user() {
    let vs = seed("06-fault-injection");
    let dr = seed("03-destination-rule-load-balancing");
    let args = [
        "-c",
        &vs,
        "-c",
        &dr,
        "-c",
        ENDPOINTS,
        "-H",
        "x-test-user: qa",
        "GET",
        "http://reviews:9080/",
    ];
    golden("fault-qa", &args);
    // Any other caller matches no rule of that VirtualService.
    let other = explain(&["-c", &vs, "GET", "http://reviews:9080/"]);
    let text = String::from_utf8(other.stdout).unwrap();
    assert!(
        text.contains("action       no rule matches: 404 NR"),
        "{text}"
    );
}

#[test]
fn linkerd_httproute_split() {
    let route = seed("08-httproute-traffic-splitting");
    golden(
        "httproute-split",
        &[
            "-c",
            &route,
            "-c",
            PRODUCTION,
            "-n",
            "production",
            "GET",
            "http://api.production:8080/api/v1/users",
        ],
    );
    // Without Services behind the backendRefs, each share answers 500.
    let out = explain(&[
        "-c",
        &route,
        "-n",
        "production",
        "GET",
        "http://api:8080/api/v1/x",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("500: api-v1.production.svc.cluster.local is not a known Service"),
        "{text}"
    );
}

#[test]
fn service_profile_routes() {
    let profile = seed("09-service-profile-retries-timeouts");
    golden(
        "profile-get-user",
        &[
            "-c",
            &profile,
            "-c",
            PRODUCTION,
            "-n",
            "production",
            "GET",
            "http://api/api/users/7",
        ],
    );
    golden(
        "profile-post-users",
        &[
            "-c",
            &profile,
            "-n",
            "production",
            "POST",
            "http://api/api/users",
        ],
    );
}

#[test]
fn ab_test_beta_testers() {
    let vs = seed("10-a-b-testing");
    let args = [
        "-c",
        &vs,
        "-c",
        ENDPOINTS,
        "-H",
        "user-group: beta-testers",
        "GET",
        "http://webapp/",
    ];
    golden("ab-beta", &args);
}

#[test]
fn blue_green() {
    let vs = seed("11-blue-green-deployment");
    golden(
        "blue-green",
        &["-c", &vs, "-c", ENDPOINTS, "GET", "http://webapp/"],
    );
}

#[test]
fn mirroring() {
    let vs = seed("12-traffic-mirroring-shadow-traffic");
    golden(
        "mirror",
        &["-c", &vs, "-c", ENDPOINTS, "GET", "http://api:8080/x"],
    );
}

#[test]
fn circuit_breaking_policies_are_shown() {
    let dr = seed("16-circuit-breaking");
    golden(
        "circuit-breaker",
        &["-c", &dr, "-c", ENDPOINTS, "GET", "http://api:8080/x"],
    );
}

#[test]
fn retries_and_timeouts() {
    let retries = seed("17-retries");
    golden(
        "retries",
        &["-c", &retries, "-c", ENDPOINTS, "GET", "http://api:8080/x"],
    );
    let timeouts = seed("18-timeouts");
    golden(
        "timeouts",
        &["-c", &timeouts, "-c", ENDPOINTS, "GET", "http://api:8080/x"],
    );
}

#[test]
fn json_for_tools() {
    let vs = seed("02-virtual-service-traffic-routing");
    let dr = seed("03-destination-rule-load-balancing");
    let out = explain(&[
        "--json",
        "-c",
        &vs,
        "-c",
        &dr,
        "-c",
        ENDPOINTS,
        "GET",
        "http://reviews:9080/",
    ]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["resource"]["id"], "VirtualService/default/reviews-vs");
    assert_eq!(json["rule"]["index"], 1);
    let destinations = json["destinations"].as_array().unwrap();
    assert_eq!(destinations.len(), 2);
    assert_eq!(destinations[0]["subset"], "v1");
    assert_eq!(destinations[0]["percent"], 90.0);
    assert_eq!(destinations[1]["percent"], 10.0);
    assert!(destinations[0]["endpoints"].as_array().unwrap().len() == 1);
}

#[test]
fn a_broken_config_exits_1_and_names_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: [x]\n  http:\n  - retries: {attemps: 3}\n",
    )
    .unwrap();
    let out = explain(&["-c", file.to_str().unwrap(), "GET", "http://x/"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("bad.yaml:7"), "{stderr}");
    assert!(stderr.contains("attemps"), "{stderr}");
}

#[test]
fn a_request_without_a_host_is_refused() {
    let vs = seed("10-a-b-testing");
    let out = explain(&["-c", &vs, "GET", "/path"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("names no host")
    );
}
