//! Route matching cost: a request against a 50-rule VirtualService whose
//! only matching rule is the last one, so every earlier rule (a mix of uri
//! prefix, regex, header and query conditions) is evaluated and rejected.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Uri};
use mesh_core::load::{LoadOptions, load_str};
use mesh_route::matcher::{CompiledVirtualService, RequestView};
use mesh_route::random::SplitMix;

/// A VirtualService with `n` rules; rule `n - 1` matches the bench request
/// and splits 90/10 between two subsets.
fn virtual_service(n: usize) -> String {
    let mut out = String::from(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: bench\n  namespace: prod\nspec:\n  hosts: [svc]\n  http:\n",
    );
    for i in 0..n - 1 {
        let m = match i % 4 {
            0 => format!("{{uri: {{prefix: /r{i}/}}}}"),
            1 => format!("{{uri: {{regex: '/r{i}/[0-9]+'}}}}"),
            2 => format!("{{headers: {{x-rule: {{exact: r{i}}}}}}}"),
            _ => format!("{{queryParams: {{rule: {{exact: r{i}}}}}, method: {{exact: POST}}}}"),
        };
        out.push_str(&format!(
            "  - match: [{m}]\n    route: [{{destination: {{host: r{i}}}}}]\n"
        ));
    }
    out.push_str(
        "  - match: [{uri: {prefix: /api/}, headers: {x-user: {regex: 'user-[0-9]+'}}}]\n    route:\n    - {destination: {host: svc, subset: v1}, weight: 90}\n    - {destination: {host: svc, subset: v2}, weight: 10}\n",
    );
    out
}

fn route_match(c: &mut Criterion) {
    let loaded = load_str("bench.yaml", &virtual_service(50), &LoadOptions::default());
    assert!(!loaded.diagnostics.has_errors(), "bench config must load");
    let vs = match loaded
        .resources
        .first()
        .map(CompiledVirtualService::compile)
    {
        Some(Ok(vs)) => vs,
        other => panic!("bench config must compile: {other:?}"),
    };
    assert_eq!(vs.rule_count(), 50);

    let method = Method::GET;
    let uri = Uri::from_static("/api/items/42?rule=none&page=3");
    let mut headers = HeaderMap::new();
    headers.insert("x-user", HeaderValue::from_static("user-1234"));
    headers.insert("x-rule", HeaderValue::from_static("none"));
    let labels = BTreeMap::new();
    let req = RequestView {
        method: &method,
        uri: &uri,
        headers: &headers,
        authority: "svc",
        scheme: "http",
        port: Some(80),
        gateway: "mesh",
        source_namespace: "prod",
        source_labels: &labels,
    };
    let random = SplitMix::seeded(1);
    assert_eq!(vs.route(&req, &random).route.rule_index, Some(49));

    c.bench_function("route_match/50_rules_last_matches", |b| {
        b.iter(|| black_box(vs.route(black_box(&req), &random)));
    });
}

criterion_group!(benches, route_match);
criterion_main!(benches);
