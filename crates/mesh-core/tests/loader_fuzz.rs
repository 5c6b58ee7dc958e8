//! Property tests: whatever bytes arrive, the loader answers with
//! diagnostics and never panics; positions it reports exist in the input.

use mesh_core::load::{LoadOptions, load_str};
use proptest::prelude::*;

const SEEDS: &[&str] = &[
    include_str!("../../../fixtures/seed/02-virtual-service-traffic-routing.yaml"),
    include_str!("../../../fixtures/seed/03-destination-rule-load-balancing.yaml"),
    include_str!("../../../fixtures/seed/04-gateway-ingress.yaml"),
    include_str!("../../../fixtures/seed/06-fault-injection.yaml"),
    include_str!("../../../fixtures/seed/07-server-authorization.yaml"),
    include_str!("../../../fixtures/seed/08-httproute-traffic-splitting.yaml"),
    include_str!("../../../fixtures/seed/09-service-profile-retries-timeouts.yaml"),
    include_str!("../../../fixtures/seed/13-istio-mtls-configuration.yaml"),
    include_str!("../../../fixtures/seed/14-authorization-policies.yaml"),
    include_str!("../../../fixtures/seed/15-istio-telemetry.yaml"),
    include_str!("../../../fixtures/seed/16-circuit-breaking.yaml"),
];

/// One edit of a valid document, of the kinds people and tools make.
#[derive(Clone, Debug)]
enum Mutation {
    DeleteRange(usize, usize),
    Insert(usize, char),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    ReplaceToken(usize, &'static str),
    Indent(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let token = prop::sample::select(vec![
        "",
        "-",
        ":",
        "{",
        "[",
        "]",
        "}",
        "*",
        "&a",
        "*a",
        "!!int",
        "'",
        "\"",
        "\t",
        "\n",
        "~",
        "null",
        "true",
        "1e999",
        "-5",
        "4294967296",
        "0x",
        "spec",
        "---",
        "%YAML 1.2",
        "? ",
        "|",
        ">",
        "#",
        "\u{feff}",
    ]);
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Mutation::DeleteRange(a, n)),
        (any::<usize>(), any::<char>()).prop_map(|(a, c)| Mutation::Insert(a, c)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<usize>(), token).prop_map(|(a, t)| Mutation::ReplaceToken(a, t)),
        (any::<usize>(), 0usize..6).prop_map(|(a, n)| Mutation::Indent(a, n)),
    ]
}

fn char_boundary(text: &str, at: usize) -> usize {
    let mut i = at % (text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let n = lines.len().max(1);
    match m {
        Mutation::DeleteRange(a, len) => {
            let start = char_boundary(text, *a);
            let end = char_boundary(text, start + len);
            format!("{}{}", &text[..start], &text[end.max(start)..])
        }
        Mutation::Insert(a, c) => {
            let at = char_boundary(text, *a);
            format!("{}{c}{}", &text[..at], &text[at..])
        }
        Mutation::DuplicateLine(a) => {
            if !lines.is_empty() {
                let l = lines[a % n].clone();
                lines.insert(a % n, l);
            }
            lines.join("\n")
        }
        Mutation::SwapLines(a, b) => {
            if !lines.is_empty() {
                lines.swap(a % n, b % n);
            }
            lines.join("\n")
        }
        Mutation::ReplaceToken(a, t) => {
            let start = char_boundary(text, *a);
            let rest = &text[start..];
            let end = rest
                .find(|c: char| c.is_whitespace() || c == ':')
                .unwrap_or(rest.len());
            format!("{}{t}{}", &text[..start], &rest[end..])
        }
        Mutation::Indent(a, k) => {
            if !lines.is_empty() {
                let l = &mut lines[a % n];
                *l = format!("{}{l}", " ".repeat(*k));
            }
            lines.join("\n")
        }
    }
}

fn check_answer(text: &str) {
    let loaded = load_str("fuzz.yaml", text, &LoadOptions::default());
    // Input that parses to nothing but null documents (comments, `---`,
    // `~`, an anchored empty node) holds no resource and needs no answer.
    let (docs, syntax) = mesh_core::yaml::parse_stream(text);
    let meaningful = !docs.is_empty() || syntax.is_some();
    if meaningful {
        assert!(
            !loaded.resources.is_empty() || !loaded.diagnostics.0.is_empty(),
            "silently ignored input:\n{text}"
        );
    }
    // YAML line breaks are \n, \r\n and a lone \r.
    let line_count = text.replace("\r\n", "\n").split(['\n', '\r']).count() as u32 + 1;
    for d in loaded.diagnostics.iter() {
        assert!(
            d.location.pos.line >= 1 && d.location.pos.line <= line_count,
            "{d} is outside the input ({line_count} lines)"
        );
        assert!(!d.message.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        check_answer(&text);
    }

    #[test]
    fn mutated_seed_configs_never_panic(
        seed in 0..SEEDS.len(),
        edits in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut text = SEEDS[seed].to_owned();
        for m in &edits {
            text = apply(&text, m);
        }
        check_answer(&text);
    }
}

#[test]
fn mutations_do_find_errors() {
    // Guard against a fuzz target that only ever sees valid input: a typo
    // in a key is always reported.
    let text = SEEDS[0].replacen("hosts:", "hots:", 1);
    let loaded = load_str("f.yaml", &text, &LoadOptions::default());
    assert!(loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
}
