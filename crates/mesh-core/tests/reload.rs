//! Hot reload on a real file system: a valid change swaps in a new
//! generation, a broken file keeps the old one and reports why.

use std::time::Duration;

use mesh_core::load::LoadOptions;
use mesh_core::reload::{self, ConfigSource, ReloadOutcome};

const V1: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: { host: reviews, subset: v1 }
"#;

const V2: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: { host: reviews, subset: v2 }
"#;

const BROKEN: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - retries:
      attemps: 3
    route:
    - destination: { host: reviews, subset: v2 }
"#;

fn subset_of(snapshot: &mesh_core::snapshot::Snapshot) -> String {
    let json = snapshot.resources[0].to_json();
    json["spec"]["http"][0]["route"][0]["destination"]["subset"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits (bounded) for the next reload attempt the watcher makes.
async fn next_attempt(rx: &mut tokio::sync::watch::Receiver<u64>) {
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("the watcher reloads within 10 s")
        .expect("watcher alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_swaps_valid_changes_and_keeps_the_old_snapshot_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reviews.yaml");
    std::fs::write(&file, V1).unwrap();
    let handle = reload::initial(ConfigSource {
        paths: vec![dir.path().to_path_buf()],
        options: LoadOptions::default(),
    })
    .unwrap();
    let first = handle.load();
    assert_eq!(first.generation, 1);
    assert_eq!(subset_of(&first), "v1");

    let _watcher = reload::watch(&handle).unwrap();
    let mut attempts = handle.subscribe_attempts();
    attempts.mark_unchanged();

    std::fs::write(&file, V2).unwrap();
    loop {
        next_attempt(&mut attempts).await;
        if handle.load().generation > 1 {
            break;
        }
    }
    let second = handle.load();
    assert_eq!(second.generation, 2);
    assert_eq!(subset_of(&second), "v2");
    assert_ne!(second.content_hash, first.content_hash);
    assert!(handle.last_failure().is_none());

    std::fs::write(&file, BROKEN).unwrap();
    loop {
        next_attempt(&mut attempts).await;
        if handle.last_failure().is_some() {
            break;
        }
    }
    let kept = handle.load();
    assert_eq!(
        kept.generation, 2,
        "a broken file must not replace the snapshot"
    );
    assert_eq!(subset_of(&kept), "v2");
    let failure = handle.last_failure().unwrap();
    assert_eq!(failure.kept_generation, 2);
    let text = failure.diagnostics.to_string();
    assert!(
        text.contains("reviews.yaml:9:7: error: VirtualService/default/reviews: spec.http[0].retries.attemps: unknown field `attemps`"),
        "{text}"
    );
    let (ok, failed) = handle.reload_counts();
    assert_eq!(ok, 1);
    assert!(failed >= 1);

    // Fixing the file recovers, and clears the failure.
    std::fs::write(&file, V1).unwrap();
    loop {
        next_attempt(&mut attempts).await;
        if handle.last_failure().is_none() && handle.load().generation == 3 {
            break;
        }
    }
    assert_eq!(subset_of(&handle.load()), "v1");
}

#[test]
fn a_reload_with_the_same_content_keeps_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.yaml");
    std::fs::write(&file, V1).unwrap();
    let handle = reload::initial(ConfigSource {
        paths: vec![file.clone()],
        options: LoadOptions::default(),
    })
    .unwrap();
    // Comments and formatting do not change the content hash.
    std::fs::write(&file, format!("# a comment\n{V1}\n")).unwrap();
    assert!(matches!(handle.reload_now(), ReloadOutcome::Unchanged));
    assert_eq!(handle.load().generation, 1);
    std::fs::write(&file, V2).unwrap();
    assert!(matches!(
        handle.reload_now(),
        ReloadOutcome::Swapped { generation: 2 }
    ));
}

#[test]
fn the_first_load_must_be_valid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), BROKEN).unwrap();
    let err = reload::initial(ConfigSource {
        paths: vec![dir.path().to_path_buf()],
        options: LoadOptions::default(),
    })
    .err()
    .expect("refused");
    assert!(err.0.has_errors());
}
