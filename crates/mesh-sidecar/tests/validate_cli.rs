//! `mesh validate` as users and CI call it: exit codes, the one-line-per-
//! problem format, folders, stdin, skipped kinds, --warnings-as-errors.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn mesh(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mesh runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().expect("mesh exits")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const GOOD: &str = "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
";

const TYPO: &str = "apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - retries:
      attemps: 3
    route:
    - destination:
        host: reviews
";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec: {}
";

#[test]
fn the_seed_loads_with_warnings_and_exit_zero() {
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/seed");
    let out = mesh(&["validate", seed], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(text.lines().all(|l| l.contains(": warning: ")), "{text}");
    assert!(text.contains("PeerAuthentication/production/default: defined again"));
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("26 resources loaded, 0 errors"),
        "{summary}"
    );
}

#[test]
fn an_error_exits_one_and_names_file_line_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vs.yaml");
    std::fs::write(&file, TYPO).unwrap();
    let out = mesh(&["validate", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let expected = format!(
        "{}:9:7: error: VirtualService/default/reviews: spec.http[0].retries.attemps: unknown field `attemps` (did you mean `attempts`?)",
        file.display()
    );
    assert!(
        stdout(&out).lines().any(|l| l == expected),
        "{}",
        stdout(&out)
    );
}

#[test]
fn stdin_namespaces_and_skipped_kinds() {
    let text = format!("{GOOD}---\n{DEPLOYMENT}");
    let out = mesh(&["validate", "-v", "--namespace", "shop", "-"], Some(&text));
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("-:12:1: note: skipped Deployment web (apps/v1): not a mesh resource"),
        "{text}"
    );
    // Without -v, notes stay quiet.
    let quiet = mesh(&["validate", "-"], Some(DEPLOYMENT));
    assert!(quiet.status.success());
    assert_eq!(stdout(&quiet), "");
}

#[test]
fn warnings_as_errors_fails_on_warnings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
    std::fs::write(dir.path().join("b.yaml"), GOOD).unwrap();
    let lenient = mesh(&["validate", dir.path().to_str().unwrap()], None);
    assert!(lenient.status.success());
    assert!(stdout(&lenient).contains("defined again"));
    let strict = mesh(
        &[
            "validate",
            "--warnings-as-errors",
            dir.path().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(strict.status.code(), Some(1));
}

#[test]
fn json_output_is_one_object_per_line() {
    let out = mesh(&["validate", "--json", "-"], Some(TYPO));
    assert_eq!(out.status.code(), Some(1));
    let line = stdout(&out);
    let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(first["severity"], "error");
    assert_eq!(first["path"], "spec.http[0].retries.attemps");
    assert_eq!(first["location"], "-:9:7");
}

#[test]
fn a_missing_file_is_an_error_not_a_crash() {
    let out = mesh(&["validate", "/nonexistent/mesh.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("/nonexistent/mesh.yaml:1:1: error: cannot read"));
}
