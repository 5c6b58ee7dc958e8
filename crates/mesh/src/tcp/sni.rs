//! Reading the SNI of a TLS ClientHello without terminating TLS, so `tls`
//! routes can pick a destination and the untouched bytes go on to it.
//!
//! This runs on the outbound TCP path before routing, only for hosts that
//! have `tls` rules. The bytes are peer data: every length is checked
//! against what is there, nothing is trusted, and anything that starts like
//! TLS (a handshake record, version 3.x) but does not parse is
//! [`Malformed`], which closes the connection; it never panics. Anything
//! that does not start like TLS is [`Hello::NotTls`] and is routed as opaque
//! TCP. The parser only reads a buffer: the caller keeps the bytes and
//! replays them to the upstream verbatim.
//!
//! Layout read (RFC 8446 5.1, 4.1.2, 4.2; RFC 6066 3): records
//! `type(1)=22 version(2) length(2) payload`, whose payloads concatenate
//! into the handshake message `type(1)=1 length(3) body`; the body is
//! `legacy_version(2) random(32) session_id<0..32> cipher_suites<2..2^16-2>
//! compression_methods<1..2^8-1> extensions<0..2^16-1>`, and extension 0
//! (`server_name`) holds `ServerNameList<1..2^16-1>` of `type(1) name<1..2^16-1>`
//! entries, type 0 being a DNS host name.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The most bytes read while looking for a complete ClientHello (a
/// ClientHello with large post-quantum key shares is a few KiB).
pub const MAX_HELLO: usize = 64 * 1024;

/// The largest TLS record payload (2^14, RFC 8446 5.1), plus the expansion
/// a TLS 1.2 peer may add (2048).
const MAX_RECORD: usize = 16 * 1024 + 2048;

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME: u16 = 0;
const HOST_NAME: u8 = 0;

/// What the first bytes of a connection are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not a TLS handshake: route as opaque TCP.
    NotTls,
    /// A TLS ClientHello, but not all of it is here yet.
    Incomplete,
    /// A complete ClientHello and its SNI host name (lower-cased, without a
    /// trailing dot), if it sent one.
    ClientHello {
        /// The `server_name` host name.
        sni: Option<String>,
    },
}

/// Bytes that start like TLS but are not a well-formed ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed TLS ClientHello: {0}")]
pub struct Malformed(pub &'static str);

/// Reads `buf` (the first bytes of a connection) as the start of a TLS
/// connection.
pub fn parse_client_hello(buf: &[u8]) -> Result<Hello, Malformed> {
    match buf {
        [] => return Ok(Hello::Incomplete),
        [first, ..] if *first != HANDSHAKE => return Ok(Hello::NotTls),
        [_] => return Ok(Hello::Incomplete),
        [_, major, ..] if *major != 3 => return Ok(Hello::NotTls),
        _ => {}
    }
    // Reassemble the handshake message from as many records as it spans.
    let mut handshake: Vec<u8> = Vec::new();
    let mut rest = buf;
    loop {
        let Some(header) = rest.get(..5) else {
            return Ok(Hello::Incomplete);
        };
        if header[0] != HANDSHAKE {
            return Err(Malformed(
                "a record other than handshake before the ClientHello ended",
            ));
        }
        if header[1] != 3 {
            return Err(Malformed("record version is not 3.x"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(Malformed("empty handshake record"));
        }
        if len > MAX_RECORD {
            return Err(Malformed("record longer than TLS allows"));
        }
        let Some(payload) = rest.get(5..5 + len) else {
            return Ok(Hello::Incomplete);
        };
        rest = &rest[5 + len..];
        let message: &[u8] = if handshake.is_empty() {
            // The common case, the whole message in one record: no copy.
            payload
        } else {
            handshake.extend_from_slice(payload);
            &handshake
        };
        if let Some(&kind) = message.first()
            && kind != CLIENT_HELLO
        {
            return Err(Malformed("first handshake message is not a ClientHello"));
        }
        if let [_, a, b, c, ..] = *message {
            let body_len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
            if body_len > MAX_HELLO {
                return Err(Malformed("ClientHello longer than accepted"));
            }
            if let Some(body) = message.get(4..4 + body_len) {
                return client_hello_sni(body).map(|sni| Hello::ClientHello { sni });
            }
        }
        // The message goes on in the next record.
        if handshake.is_empty() {
            handshake.extend_from_slice(payload);
        }
    }
}

/// A cursor over peer bytes where every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        if n > self.buf.len() {
            return Err(Malformed(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Malformed> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let n = usize::from(self.u8(what)?);
        self.take(n, what)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let n = usize::from(self.u16(what)?);
        self.take(n, what)
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The SNI host name of a ClientHello body.
fn client_hello_sni(body: &[u8]) -> Result<Option<String>, Malformed> {
    let mut r = Reader { buf: body };
    r.take(2, "truncated legacy_version")?;
    r.take(32, "truncated random")?;
    let session_id = r.vec8("truncated session_id")?;
    if session_id.len() > 32 {
        return Err(Malformed("session_id longer than 32 bytes"));
    }
    let suites = r.vec16("truncated cipher_suites")?;
    if suites.is_empty() || !suites.len().is_multiple_of(2) {
        return Err(Malformed(
            "cipher_suites length is not a positive even number",
        ));
    }
    if r.vec8("truncated compression_methods")?.is_empty() {
        return Err(Malformed("no compression_methods"));
    }
    if r.is_empty() {
        // A ClientHello without extensions (SSL 3 style): no SNI.
        return Ok(None);
    }
    let mut extensions = Reader {
        buf: r.vec16("truncated extensions")?,
    };
    if !r.is_empty() {
        return Err(Malformed("bytes after the extensions"));
    }
    let mut sni = None;
    let mut seen_server_name = false;
    while !extensions.is_empty() {
        let kind = extensions.u16("truncated extension type")?;
        let data = extensions.vec16("truncated extension data")?;
        if kind != SERVER_NAME {
            continue;
        }
        if seen_server_name {
            return Err(Malformed("server_name extension sent twice"));
        }
        seen_server_name = true;
        sni = server_name(data)?;
    }
    Ok(sni)
}

/// The host name of a `server_name` extension's data.
fn server_name(data: &[u8]) -> Result<Option<String>, Malformed> {
    let mut r = Reader { buf: data };
    let mut list = Reader {
        buf: r.vec16("truncated server_name list")?,
    };
    if !r.is_empty() {
        return Err(Malformed("bytes after the server_name list"));
    }
    if list.is_empty() {
        return Err(Malformed("empty server_name list"));
    }
    let mut host = None;
    while !list.is_empty() {
        let kind = list.u8("truncated server_name type")?;
        let name = list.vec16("truncated server_name")?;
        if kind == HOST_NAME && host.is_none() {
            host = Some(host_name(name)?);
        }
    }
    Ok(host)
}

/// Checks a host name's bytes (letters, digits, `-`, `_`, dots between
/// labels) and lower-cases it.
fn host_name(name: &[u8]) -> Result<String, Malformed> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(Malformed("server_name host name is empty or too long"));
    }
    let valid = name.split(|b| *b == b'.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    });
    if !valid {
        return Err(Malformed("server_name is not a DNS host name"));
    }
    Ok(name
        .iter()
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect())
}

/// Why sniffing a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    /// Starts like TLS but does not parse.
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// The client closed before a whole ClientHello arrived.
    #[error("the client closed the connection during the TLS ClientHello")]
    Closed,
    /// Reading failed.
    #[error("reading the ClientHello failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the first bytes of `io` into `buf` until they are a whole
/// ClientHello, not TLS at all, or `wait` passes without a complete one.
/// The bytes stay in `buf` for the caller to replay. A client that sends
/// nothing within `wait` (a server-first protocol) is [`Hello::NotTls`]; one
/// whose ClientHello stalls half-way is `Malformed`.
pub async fn sniff<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
    wait: Duration,
) -> Result<Hello, SniffError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut chunk = [0u8; 4096];
    loop {
        match parse_client_hello(buf)? {
            Hello::Incomplete => {}
            done => return Ok(done),
        }
        if buf.len() >= MAX_HELLO {
            return Err(Malformed("ClientHello longer than accepted").into());
        }
        let room = (MAX_HELLO - buf.len()).min(chunk.len());
        let read = tokio::time::timeout_at(deadline, io.read(&mut chunk[..room])).await;
        match read {
            Err(_) if buf.is_empty() => return Ok(Hello::NotTls),
            Err(_) => {
                return Err(Malformed("ClientHello incomplete at the sniffing deadline").into());
            }
            Ok(Ok(0)) => return Err(SniffError::Closed),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello built by hand: `sni` in a server_name extension after
    /// a padding extension.
    fn hello(sni: Option<&[u8]>) -> Vec<u8> {
        let mut ext = Vec::new();
        // An unrelated extension first (supported_versions: TLS 1.3).
        ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        if let Some(name) = sni {
            let entry_len = 3 + name.len();
            let data_len = 2 + entry_len;
            ext.extend_from_slice(&[0x00, 0x00]);
            ext.extend_from_slice(&(data_len as u16).to_be_bytes());
            ext.extend_from_slice(&(entry_len as u16).to_be_bytes());
            ext.push(0);
            ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
            ext.extend_from_slice(name);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut msg = vec![CLIENT_HELLO, 0, 0, 0];
        let n = body.len();
        msg[1] = (n >> 16) as u8;
        msg[2] = (n >> 8) as u8;
        msg[3] = n as u8;
        msg.extend_from_slice(&body);
        record(&msg)
    }

    fn record(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![HANDSHAKE, 3, 1];
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn sni_of(buf: &[u8]) -> Option<String> {
        match parse_client_hello(buf) {
            Ok(Hello::ClientHello { sni }) => sni,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_the_host_name() {
        assert_eq!(
            sni_of(&hello(Some(b"API.Example.com."))).as_deref(),
            Some("api.example.com")
        );
        assert_eq!(sni_of(&hello(None)), None);
    }

    #[test]
    fn reads_a_real_rustls_client_hello() {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("db.Example.com").unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut bytes).unwrap();
        }
        assert_eq!(sni_of(&bytes).as_deref(), Some("db.example.com"));
        for n in 0..bytes.len() {
            assert_eq!(parse_client_hello(&bytes[..n]), Ok(Hello::Incomplete));
        }
    }

    #[test]
    fn every_prefix_is_incomplete_never_an_error() {
        let full = hello(Some(b"a.example.com"));
        for n in 0..full.len() {
            assert_eq!(
                parse_client_hello(&full[..n]),
                Ok(Hello::Incomplete),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn a_hello_split_over_records_is_reassembled() {
        let one = hello(Some(b"split.example.com"));
        let msg = &one[5..];
        for cut in [1, 3, 4, 10, msg.len() - 1] {
            let mut two = record(&msg[..cut]);
            two.extend_from_slice(&record(&msg[cut..]));
            assert_eq!(
                sni_of(&two).as_deref(),
                Some("split.example.com"),
                "cut {cut}"
            );
            // Every prefix of the two-record form is incomplete too.
            for n in 0..two.len() {
                assert_eq!(parse_client_hello(&two[..n]), Ok(Hello::Incomplete));
            }
        }
    }

    #[test]
    fn other_protocols_are_not_tls() {
        assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n"), Ok(Hello::NotTls));
        assert_eq!(
            parse_client_hello(b"\0\0\0\x08\x04\xd2\x16\x2f"),
            Ok(Hello::NotTls)
        );
        assert_eq!(parse_client_hello(&[HANDSHAKE, 0x10]), Ok(Hello::NotTls));
    }

    #[test]
    fn malformed_hellos_are_errors() {
        // A bad host name.
        assert!(parse_client_hello(&hello(Some(b"bad name"))).is_err());
        assert!(parse_client_hello(&hello(Some(b""))).is_err());
        // Not a ClientHello (a ServerHello).
        let mut sh = hello(Some(b"a.b"));
        sh[5] = 2;
        assert!(parse_client_hello(&sh).is_err());
        // Inner length larger than the extension block.
        let mut bad = hello(Some(b"a.b"));
        let last = bad.len() - 5;
        bad[last] = 0xff;
        assert!(parse_client_hello(&bad).is_err());
        // Absurd record length.
        assert!(parse_client_hello(&[HANDSHAKE, 3, 1, 0xff, 0xff]).is_err());
    }

    #[test]
    fn mutated_hellos_never_panic() {
        // Deterministic pseudo-random byte flips and truncations over a
        // valid ClientHello: every outcome is a value, none a panic.
        let base = hello(Some(b"fuzz.example.com"));
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut m = base.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % m.len();
                m[i] = next() as u8;
            }
            let cut = (next() as usize) % (m.len() + 1);
            let _ = parse_client_hello(&m[..cut]);
            let _ = parse_client_hello(&m);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sniffing_reads_until_the_hello_is_whole() {
        let bytes = hello(Some(b"db.example.com"));
        let (mut client, mut server) = tokio::io::duplex(64);
        let sent = bytes.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in sent.chunks(7) {
                client.write_all(piece).await.unwrap();
            }
            // Keep the connection open.
            std::future::pending::<()>().await;
        });
        let mut buf = Vec::new();
        let hello = sniff(&mut server, &mut buf, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(
            hello,
            Hello::ClientHello {
                sni: Some("db.example.com".into())
            }
        );
        assert_eq!(buf, bytes, "the bytes are kept for replay");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_not_tls() {
        let (_client, mut server) = tokio::io::duplex(64);
        let mut buf = Vec::new();
        let hello = sniff(&mut server, &mut buf, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(hello, Hello::NotTls);
    }
}
