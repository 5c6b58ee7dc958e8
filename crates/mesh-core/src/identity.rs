//! The workload the mesh runs for: its namespace, service account and
//! labels. Routing reads them (short host names, `sourceLabels`,
//! `sourceNamespace`); mTLS turns them into a SPIFFE identity later.

use std::collections::BTreeMap;

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

#[cfg(test)]
mod tests {
    use super::*;

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
