//! Resources: the kinds the mesh understands, and one loaded object of a kind.

use std::fmt;

use serde::Serialize;

use crate::diag::Location;
use crate::path::PathSeg;
use crate::schema::common::ObjectMeta;
use crate::schema::{
    gateway_api, istio_networking as net, istio_operator, istio_security as sec, istio_telemetry,
    linkerd_policy as l5d, linkerd_profile,
};
use crate::validate::{Checker, Validate};
use crate::yaml::Node;
use crate::yaml::de::{DeError, from_node};

/// Declares every kind once: its enum variant, API group, kind name, the API
/// versions users write, and its spec type.
macro_rules! kinds {
    ($( $variant:ident => $group:literal, $kind:literal, [$($ver:literal),+], $ty:ty; )+) => {
        /// A resource kind the mesh understands.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $(
                #[doc = concat!("`", $group, "` ", $kind)]
                $variant,
            )+
        }

        impl Kind {
            /// Every kind.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),+];

            /// The API group (`networking.istio.io`).
            pub fn group(self) -> &'static str {
                match self { $(Kind::$variant => $group),+ }
            }

            /// The kind as written in `kind:` (`VirtualService`).
            pub fn name(self) -> &'static str {
                match self { $(Kind::$variant => $kind),+ }
            }

            /// The API versions accepted for this kind.
            pub fn versions(self) -> &'static [&'static str] {
                match self { $(Kind::$variant => &[$($ver),+]),+ }
            }
        }

        /// The typed spec of a resource.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum Spec {
            $(
                #[doc = concat!("A ", $kind, " spec.")]
                $variant($ty),
            )+
        }

        impl Spec {
            /// Deserializes the spec of `kind` from its node (at `spec`).
            pub fn from_node(kind: Kind, node: &Node) -> Result<Spec, DeError> {
                let prefix = [PathSeg::Field("spec".to_owned())];
                Ok(match kind {
                    $(Kind::$variant => Spec::$variant(from_node(node, &prefix)?),)+
                })
            }

            /// Deserializes the spec of `kind` from its JSON form (as
            /// `/config_dump` prints it).
            pub fn from_json(kind: Kind, value: serde_json::Value) -> serde_json::Result<Spec> {
                Ok(match kind {
                    $(Kind::$variant => Spec::$variant(serde_json::from_value(value)?),)+
                })
            }

            /// The kind of this spec.
            pub fn kind(&self) -> Kind {
                match self { $(Spec::$variant(_) => Kind::$variant),+ }
            }
        }

        impl Validate for Spec {
            fn validate(&self, cx: &mut Checker) {
                match self { $(Spec::$variant(s) => s.validate(cx)),+ }
            }
        }
    };
}

// The two largest specs are boxed so that a `Resource` stays small: loading
// moves every resource several times, and 20,000 copies of a 2.5 KiB enum
// cost more than the boxes do.
const ISTIO_NET: [&str; 3] = ["v1alpha3", "v1beta1", "v1"];

kinds! {
    VirtualService => "networking.istio.io", "VirtualService", ["v1alpha3", "v1beta1", "v1"], net::VirtualService;
    DestinationRule => "networking.istio.io", "DestinationRule", ["v1alpha3", "v1beta1", "v1"], Box<net::DestinationRule>;
    Gateway => "networking.istio.io", "Gateway", ["v1alpha3", "v1beta1", "v1"], net::Gateway;
    ServiceEntry => "networking.istio.io", "ServiceEntry", ["v1alpha3", "v1beta1", "v1"], net::ServiceEntry;
    WorkloadEntry => "networking.istio.io", "WorkloadEntry", ["v1alpha3", "v1beta1", "v1"], net::WorkloadEntry;
    PeerAuthentication => "security.istio.io", "PeerAuthentication", ["v1beta1", "v1"], sec::PeerAuthentication;
    AuthorizationPolicy => "security.istio.io", "AuthorizationPolicy", ["v1beta1", "v1"], sec::AuthorizationPolicy;
    RequestAuthentication => "security.istio.io", "RequestAuthentication", ["v1beta1", "v1"], sec::RequestAuthentication;
    Telemetry => "telemetry.istio.io", "Telemetry", ["v1alpha1", "v1"], istio_telemetry::Telemetry;
    IstioOperator => "install.istio.io", "IstioOperator", ["v1alpha1"], Box<istio_operator::IstioOperator>;
    Server => "policy.linkerd.io", "Server", ["v1beta1", "v1beta2", "v1beta3"], l5d::Server;
    ServerAuthorization => "policy.linkerd.io", "ServerAuthorization", ["v1beta1"], l5d::ServerAuthorization;
    LinkerdHttpRoute => "policy.linkerd.io", "HTTPRoute", ["v1alpha1", "v1beta1", "v1beta2", "v1beta3"], gateway_api::HttpRoute;
    LinkerdAuthorizationPolicy => "policy.linkerd.io", "AuthorizationPolicy", ["v1alpha1"], l5d::AuthorizationPolicy;
    MeshTlsAuthentication => "policy.linkerd.io", "MeshTLSAuthentication", ["v1alpha1"], l5d::MeshTlsAuthentication;
    NetworkAuthentication => "policy.linkerd.io", "NetworkAuthentication", ["v1alpha1"], l5d::NetworkAuthentication;
    HttpLocalRateLimitPolicy => "policy.linkerd.io", "HTTPLocalRateLimitPolicy", ["v1alpha1"], l5d::HttpLocalRateLimitPolicy;
    ServiceProfile => "linkerd.io", "ServiceProfile", ["v1alpha2"], linkerd_profile::ServiceProfile;
    HttpRoute => "gateway.networking.k8s.io", "HTTPRoute", ["v1", "v1beta1"], gateway_api::HttpRoute;
    GrpcRoute => "gateway.networking.k8s.io", "GRPCRoute", ["v1", "v1alpha2"], gateway_api::GrpcRoute;
    K8sGateway => "gateway.networking.k8s.io", "Gateway", ["v1", "v1beta1"], gateway_api::Gateway;
    ReferenceGrant => "gateway.networking.k8s.io", "ReferenceGrant", ["v1beta1", "v1alpha2"], gateway_api::ReferenceGrant;
}

impl Kind {
    /// Finds the kind for `group` and `kind` as written in a document.
    pub fn lookup(group: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.group() == group && k.name() == kind)
    }

    /// Whether any kind lives in this API group (so an unknown kind there is
    /// a typo, not a foreign resource).
    pub fn is_mesh_group(group: &str) -> bool {
        Kind::ALL.iter().any(|k| k.group() == group)
    }

    /// Whether Istio's rule that short host names are qualified with the
    /// resource's namespace applies (Istio networking resources).
    pub fn is_istio_networking(self) -> bool {
        self.group() == "networking.istio.io" && self.versions() == ISTIO_NET
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One loaded, typed resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Its kind.
    pub kind: Kind,
    /// `apiVersion` as written (`networking.istio.io/v1beta1`).
    pub api_version: String,
    /// Metadata; `namespace` is always set after loading.
    pub meta: ObjectMeta,
    /// The typed spec.
    pub spec: Spec,
    /// Where the document starts.
    pub location: Location,
    /// Position in load order (path order of files, then document order).
    pub order: usize,
}

impl Resource {
    /// The resource's namespace (filled in by the loader).
    pub fn namespace(&self) -> &str {
        self.meta.namespace.as_deref().unwrap_or("default")
    }

    /// The resource's name.
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// `Kind/namespace/name`, as diagnostics print it.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace(), self.meta.name)
    }

    /// The JSON form `/config_dump` prints.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": self.api_version,
            "kind": self.kind.name(),
            "metadata": self.meta,
            "spec": self.spec,
            "source": self.location.to_string(),
        })
    }
}
