//! Stable hashing for consistent-hash balancing, and extracting the hash key
//! from a request.
//!
//! Ring placement must agree across processes and restarts (two sidecars in
//! front of the same service should send a user to the same pod), so nothing
//! here uses std's randomly seeded hasher: the hash is FNV-1a over the bytes
//! followed by MurmurHash3's 64-bit finalizer, which fixes FNV's weak
//! avalanche in the high bits.

use std::net::IpAddr;

use http::header::COOKIE;

use super::HashKey;
use crate::random::RandomSource;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A stable 64-bit hash of `bytes`: the same input gives the same value in
/// every process, on every platform, in every version of this crate.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    hash_seeded(bytes, 0)
}

/// [`hash_bytes`] with a seed, for independent hash functions over one key.
pub(crate) fn hash_seeded(bytes: &[u8], seed: u64) -> u64 {
    let mut h = FNV_OFFSET ^ mix64(seed);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix64(h ^ bytes.len() as u64)
}

/// MurmurHash3's fmix64: a bijection with full avalanche.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z ^= z >> 33;
    z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
    z ^= z >> 33;
    z = z.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    z ^ (z >> 33)
}

/// The consistent-hash value of a request under `key`, or `None` when the
/// request does not carry the key (the balancer then picks at random).
///
/// Header: the first value. Cookie: the first cookie of that name over all
/// `Cookie` headers. Source IP: the address bytes (an IPv4-mapped IPv6
/// address hashes as the IPv4 address). Query parameter: the raw value of
/// the first occurrence (not percent-decoded; a bare `name` is the empty
/// value).
pub fn hash_key(
    key: &HashKey,
    headers: &http::HeaderMap,
    uri: &http::Uri,
    source_ip: Option<IpAddr>,
) -> Option<u64> {
    match key {
        HashKey::Header(name) => headers.get(name.as_str()).map(|v| hash_bytes(v.as_bytes())),
        HashKey::Cookie { name, .. } => cookie_value(headers, name).map(hash_bytes),
        HashKey::SourceIp => source_ip.map(|ip| match ip.to_canonical() {
            IpAddr::V4(v4) => hash_bytes(&v4.octets()),
            IpAddr::V6(v6) => hash_bytes(&v6.octets()),
        }),
        HashKey::QueryParameter(name) => {
            query_value(uri.query()?, name).map(|v| hash_bytes(v.as_bytes()))
        }
    }
}

fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(COOKIE).iter().find_map(|header| {
        header.as_bytes().split(|b| *b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            let (k, v) = pair.split_at(eq);
            (k.trim_ascii() == name.as_bytes()).then(|| v[1..].trim_ascii())
        })
    })
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// A hash cookie the proxy generated because the request had none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedCookie {
    /// The hash to balance this request on: equal to what [`hash_key`]
    /// returns for later requests that carry the cookie.
    pub hash: u64,
    /// The generated cookie value.
    pub value: String,
    /// The `Set-Cookie` response header value.
    pub set_cookie: String,
}

/// When `key` is a cookie with a `ttl` and the request lacks that cookie, a
/// new cookie to hash on and to set on the response (SPEC 5.2). `None` for
/// other keys, when the cookie is present, or when `ttl` is unset (the
/// balancer then picks at random).
///
/// The header is `name=value; Path=path; Max-Age=seconds; HttpOnly`, with
/// `Path` omitted when unset and `Max-Age` omitted for a zero ttl (a
/// session cookie); a sub-second ttl rounds up to one second.
pub fn cookie_to_set(
    key: &HashKey,
    headers: &http::HeaderMap,
    random: &dyn RandomSource,
) -> Option<GeneratedCookie> {
    let HashKey::Cookie { name, path, ttl } = key else {
        return None;
    };
    let ttl = (*ttl)?;
    if cookie_value(headers, name).is_some() {
        return None;
    }
    let value = format!("{:016x}", random.next_u64());
    let mut set_cookie = format!("{name}={value}");
    if let Some(path) = path {
        set_cookie.push_str("; Path=");
        set_cookie.push_str(path);
    }
    if !ttl.is_zero() {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        set_cookie.push_str(&format!("; Max-Age={secs}"));
    }
    set_cookie.push_str("; HttpOnly");
    Some(GeneratedCookie {
        hash: hash_bytes(value.as_bytes()),
        value,
        set_cookie,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use super::*;
    use crate::random::SplitMix;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn hash_is_stable_and_spreads() {
        // Pinned values: a change here silently moves every sticky session.
        assert_eq!(hash_bytes(b""), mix64(FNV_OFFSET));
        assert_eq!(hash_bytes(b"user-1"), hash_bytes(b"user-1"));
        assert_ne!(hash_bytes(b"user-1"), hash_bytes(b"user-2"));
        assert_ne!(hash_seeded(b"a", 1), hash_seeded(b"a", 2));
        // Top bits are well mixed: 10,000 keys over 16 buckets by the top nibble.
        let mut buckets = [0u32; 16];
        for i in 0..10_000 {
            buckets[(hash_bytes(format!("k{i}").as_bytes()) >> 60) as usize] += 1;
        }
        let sigma = (10_000.0f64 / 16.0 * 15.0 / 16.0).sqrt();
        for b in buckets {
            assert!((f64::from(b) - 625.0).abs() < 5.0 * sigma, "{buckets:?}");
        }
    }

    #[test]
    fn header_key() {
        let key = HashKey::Header("x-user".into());
        let p = parts("/", &[("X-User", "alice"), ("x-user", "bob")]);
        assert_eq!(
            hash_key(&key, &p.headers, &p.uri, None),
            Some(hash_bytes(b"alice"))
        );
        assert_eq!(
            hash_key(&key, &parts("/", &[]).headers, &parts("/", &[]).uri, None),
            None
        );
    }

    #[test]
    fn cookie_key() {
        let key = HashKey::Cookie {
            name: "sid".into(),
            path: None,
            ttl: None,
        };
        let p = parts("/", &[("cookie", "a=1; sid=abc; b=2")]);
        assert_eq!(
            hash_key(&key, &p.headers, &p.uri, None),
            Some(hash_bytes(b"abc"))
        );
        let p = parts("/", &[("cookie", "a=1;b=2"), ("cookie", "x=y; sid=def")]);
        assert_eq!(
            hash_key(&key, &p.headers, &p.uri, None),
            Some(hash_bytes(b"def"))
        );
        let p = parts("/", &[("cookie", "sidx=1; xsid=2"), ("cookie", "sid")]);
        assert_eq!(hash_key(&key, &p.headers, &p.uri, None), None);
        assert_eq!(
            hash_key(&key, &parts("/", &[]).headers, &parts("/", &[]).uri, None),
            None
        );
    }

    #[test]
    fn query_key() {
        let key = HashKey::QueryParameter("user".into());
        let p = parts("/p?a=1&user=carol&user=dave", &[]);
        assert_eq!(
            hash_key(&key, &p.headers, &p.uri, None),
            Some(hash_bytes(b"carol"))
        );
        let p = parts("/p?user&x=1", &[]);
        assert_eq!(
            hash_key(&key, &p.headers, &p.uri, None),
            Some(hash_bytes(b""))
        );
        assert_eq!(
            hash_key(
                &key,
                &parts("/p?username=x", &[]).headers,
                &parts("/p?username=x", &[]).uri,
                None
            ),
            None
        );
        assert_eq!(
            hash_key(&key, &parts("/p", &[]).headers, &parts("/p", &[]).uri, None),
            None
        );
    }

    #[test]
    fn source_ip_key() {
        let p = parts("/", &[]);
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped());
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let h = hash_key(&HashKey::SourceIp, &p.headers, &p.uri, Some(v4));
        assert_eq!(h, Some(hash_bytes(&[10, 0, 0, 7])));
        assert_eq!(
            hash_key(&HashKey::SourceIp, &p.headers, &p.uri, Some(mapped)),
            h
        );
        assert_ne!(
            hash_key(&HashKey::SourceIp, &p.headers, &p.uri, Some(v6)),
            h
        );
        assert_eq!(hash_key(&HashKey::SourceIp, &p.headers, &p.uri, None), None);
    }

    #[test]
    fn generated_cookie() {
        let r = SplitMix::seeded(3);
        let key = HashKey::Cookie {
            name: "sid".into(),
            path: Some("/app".into()),
            ttl: Some(Duration::from_secs(90)),
        };
        let g = cookie_to_set(&key, &parts("/", &[]).headers, &r).unwrap();
        assert_eq!(
            g.set_cookie,
            format!("sid={}; Path=/app; Max-Age=90; HttpOnly", g.value)
        );
        // The next request carrying the cookie hashes the same.
        let cookie = format!("sid={}", g.value);
        let next = parts("/", &[("cookie", cookie.as_str())]);
        assert_eq!(hash_key(&key, &next.headers, &next.uri, None), Some(g.hash));
        // Present: nothing to generate.
        assert_eq!(cookie_to_set(&key, &next.headers, &r), None);

        let session = HashKey::Cookie {
            name: "sid".into(),
            path: None,
            ttl: Some(Duration::ZERO),
        };
        let g = cookie_to_set(&session, &parts("/", &[]).headers, &r).unwrap();
        assert_eq!(g.set_cookie, format!("sid={}; HttpOnly", g.value));

        let no_ttl = HashKey::Cookie {
            name: "sid".into(),
            path: None,
            ttl: None,
        };
        assert_eq!(cookie_to_set(&no_ttl, &parts("/", &[]).headers, &r), None);
        assert_eq!(
            cookie_to_set(&HashKey::SourceIp, &parts("/", &[]).headers, &r),
            None
        );
    }
}
