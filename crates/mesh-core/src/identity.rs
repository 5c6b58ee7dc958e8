//! The workload the mesh runs for: its namespace, service account and
//! labels. Routing reads them (short host names, `sourceLabels`,
//! `sourceNamespace`); mTLS turns them into a SPIFFE identity later.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Who this proxy (or in-process client) speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Workload {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
    /// Pod labels (`app`, `version`, ...).
    pub labels: BTreeMap<String, String>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            namespace: "default".to_owned(),
            service_account: "default".to_owned(),
            labels: BTreeMap::new(),
        }
    }
}

impl Workload {
    /// The Istio principal (`cluster.local/ns/<ns>/sa/<sa>`).
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            crate::host::CLUSTER_DOMAIN,
            self.namespace,
            self.service_account
        )
    }

    /// Parses `k=v` label pairs (from `--label` or `MESH_LABELS=a=b,c=d`).
    pub fn parse_labels<'a>(
        pairs: impl IntoIterator<Item = &'a str>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        for pair in pairs {
            for item in pair.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (k, v) = item
                    .split_once('=')
                    .ok_or_else(|| format!("label {item:?} is not key=value"))?;
                if k.is_empty() {
                    return Err(format!("label {item:?} has an empty key"));
                }
                out.insert(k.to_owned(), v.to_owned());
            }
        }
        Ok(out)
    }
}

/// The authenticated identity of the client of an inbound request. The
/// inbound listener's mTLS acceptor puts it in the request's extensions
/// once it has verified the peer certificate; inbound policy (rate limits,
/// authorization) reads it from there. A request without one comes from an
/// unauthenticated (plaintext) client.
///
/// It holds the identity as the certificate states it, in either mesh's
/// spelling: a SPIFFE ID (`spiffe://cluster.local/ns/emojivoto/sa/web`,
/// Istio) or a Linkerd name
/// (`web.emojivoto.serviceaccount.identity.linkerd.cluster.local`). Cloning
/// is a reference-count increment, so it can key per-client state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerIdentity(Arc<str>);

impl PeerIdentity {
    /// An identity as the peer's certificate states it.
    pub fn new(identity: impl Into<Arc<str>>) -> Self {
        PeerIdentity(identity.into())
    }

    /// The identity text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Kubernetes service account the identity names, as
    /// `(namespace, name)`, when it is written in one of the two mesh
    /// spellings: `[spiffe://]<trust-domain>/ns/<ns>/sa/<sa>` or
    /// `<sa>.<ns>.serviceaccount.identity.<control-plane-ns>.<trust-domain>`.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        let id = self.as_str();
        if let Some(rest) = id.split_once("/ns/").map(|(_, rest)| rest) {
            let (ns, sa) = rest.split_once("/sa/")?;
            return (!ns.is_empty() && !sa.is_empty() && !sa.contains('/')).then_some((ns, sa));
        }
        let (sa, rest) = id.split_once('.')?;
        let (ns, rest) = rest.split_once('.')?;
        (!sa.is_empty() && !ns.is_empty() && rest.starts_with("serviceaccount.identity."))
            .then_some((ns, sa))
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for PeerIdentity {
    fn from(identity: &str) -> Self {
        PeerIdentity::new(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_identities_name_their_service_account_in_both_spellings() {
        let cases = [
            (
                "spiffe://cluster.local/ns/prod/sa/web",
                Some(("prod", "web")),
            ),
            ("cluster.local/ns/prod/sa/web", Some(("prod", "web"))),
            (
                "web.prod.serviceaccount.identity.linkerd.cluster.local",
                Some(("prod", "web")),
            ),
            ("spiffe://cluster.local/ns//sa/web", None),
            ("spiffe://example.org/workload-1", None),
            ("web.prod.svc.cluster.local", None),
            ("", None),
        ];
        for (id, want) in cases {
            assert_eq!(PeerIdentity::from(id).service_account(), want, "{id}");
        }
    }

    #[test]
    fn labels_parse_from_flags_and_env_lists() {
        let l = Workload::parse_labels(["app=api", "version=v1,team=x"]).unwrap();
        assert_eq!(l["app"], "api");
        assert_eq!(l["team"], "x");
        assert!(Workload::parse_labels(["novalue"]).is_err());
        assert!(Workload::parse_labels(["=v"]).is_err());
    }

    #[test]
    fn principal() {
        let w = Workload {
            namespace: "prod".into(),
            service_account: "web".into(),
            labels: BTreeMap::new(),
        };
        assert_eq!(w.principal(), "cluster.local/ns/prod/sa/web");
    }
}
