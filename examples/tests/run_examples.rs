//! Runs the proxyless examples as their users would and checks that they
//! succeed and print where their calls were routed.

use std::process::Command;

fn run(exe: &str) -> String {
    let out = Command::new(exe).output().expect("example starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{exe} failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn has_line(stdout: &str, prefix: &str, suffix: &str) -> bool {
    stdout
        .lines()
        .any(|l| l.starts_with(prefix) && l.ends_with(suffix))
}

#[test]
fn proxyless_http_routes_the_canary() {
    let out = run(env!("CARGO_BIN_EXE_proxyless-http"));
    assert!(
        has_line(
            &out,
            "GET http://reviews:9080/reviews/1 -> reviews-",
            "(200 OK)"
        ),
        "{out}"
    );
    assert!(
        has_line(&out, "split over 200 calls: reviews-v1=", ""),
        "{out}"
    );
    assert!(
        has_line(
            &out,
            "GET /reviews/1 (Host: reviews, x-canary: true) -> reviews-v2",
            "(200 OK)"
        ),
        "{out}"
    );
    assert!(
        has_line(&out, "GET http://nowhere:9080/ -> local reply 503", ""),
        "{out}"
    );
    assert_eq!(out.lines().last(), Some("proxyless-http: ok"), "{out}");
}

#[test]
fn proxyless_grpc_routes_by_metadata_and_streams() {
    let out = run(env!("CARGO_BIN_EXE_proxyless-grpc"));
    assert!(has_line(&out, "SayHello(ada) -> greeter-v1", ""), "{out}");
    assert!(
        has_line(&out, "SayHello(grace, x-user: beta) -> greeter-v2", ""),
        "{out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("Countdown(linus) <- greeter-v2"))
            .count(),
        3,
        "{out}"
    );
    assert!(
        has_line(&out, "Countdown(linus) streamed 3 messages", ""),
        "{out}"
    );
    assert!(
        has_line(
            &out,
            "SayHello(\"\") -> InvalidArgument: name is required",
            ""
        ),
        "{out}"
    );
    assert_eq!(out.lines().last(), Some("proxyless-grpc: ok"), "{out}");
}
