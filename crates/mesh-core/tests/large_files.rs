//! Large files are parsed on several cores; positions and order must come
//! out exactly as a single-threaded parse gives them.

use mesh_core::load::{LoadOptions, load_str};

fn doc(i: usize) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: svc-{i}\n  annotations:\n    note: |\n      indented --- is content, not a document marker\nspec:\n  hosts:\n  - svc-{i}\n  http:\n  - route:\n    - destination:\n        host: svc-{i}\n"
    )
}

#[test]
fn diagnostics_in_every_slice_point_at_the_right_line() {
    let lines_per_doc = doc(0).lines().count();
    let n = 4000; // ~1.4 MB: well above the parallel threshold
    let broken = [7usize, 1999, 2000, 3998];
    let mut text = String::new();
    for i in 0..n {
        let d = doc(i);
        if broken.contains(&i) {
            text.push_str(&d.replace("  - route:", "  - rout:"));
        } else {
            text.push_str(&d);
        }
    }
    assert!(text.len() > 1_000_000);
    let loaded = load_str("big.yaml", &text, &LoadOptions::default());
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == mesh_core::diag::Severity::Error)
        .map(|d| d.to_string())
        .collect();
    // `rout:` is line 13 of each document (1-based), column 5. Validation
    // of the rest still runs, so the rule without a route is reported too.
    let expected: Vec<String> = broken
        .iter()
        .flat_map(|&i| {
            let line = i * lines_per_doc + 13;
            [
                format!(
                    "big.yaml:{line}:5: error: VirtualService/default/svc-{i}: spec.http[0]: a rule needs one of route, redirect, directResponse or delegate"
                ),
                format!(
                    "big.yaml:{line}:5: error: VirtualService/default/svc-{i}: spec.http[0].rout: unknown field `rout` (did you mean `route`?)"
                ),
            ]
        })
        .collect();
    assert_eq!(errors, expected);
    // Every other document loaded, in document order.
    assert_eq!(loaded.resources.len(), n - broken.len());
    let names: Vec<usize> = loaded
        .resources
        .iter()
        .map(|r| r.name().trim_start_matches("svc-").parse().unwrap())
        .collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]));
    assert!(loaded.resources.windows(2).all(|w| w[0].order < w[1].order));
}

#[test]
fn crlf_files_keep_their_line_numbers() {
    let n = 3000;
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&doc(i));
    }
    let text = text.replace('\n', "\r\n");
    let text = text.replace("name: svc-2500\r\n", "name: svc-2500\r\n  bogus: 1\r\n");
    let loaded = load_str("crlf.yaml", &text, &LoadOptions::default());
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == mesh_core::diag::Severity::Error)
        .map(|d| d.to_string())
        .collect();
    let line = 2500 * doc(0).lines().count() + 6;
    assert_eq!(
        errors,
        [format!(
            "crlf.yaml:{line}:3: error: VirtualService/default/svc-2500: metadata.bogus: unknown field `bogus`; expected one of name, namespace, labels, annotations, creationTimestamp, generateName, uid, resourceVersion, generation, selfLink, managedFields, ownerReferences, finalizers, deletionTimestamp"
        )]
    );
}
