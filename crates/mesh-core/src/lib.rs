//! # mesh-core: the configuration side of the mesh
//!
//! Every request the mesh handles is decided by configuration that users
//! write as Istio, Linkerd and Gateway API YAML. This crate is where that
//! YAML enters: it is the first stop of the request flow's *control* path and
//! sits under every layer crate.
//!
//! ```text
//! files / folders / stdin
//!   -> yaml      located tree (every key and value knows its line and column)
//!   -> schema    typed resources, unknown fields rejected
//!   -> validate  errors (resource rejected) and warnings (loaded), file:line:col
//!   -> snapshot  the immutable, indexed view the request path reads
//!   -> reload    a watcher that recompiles and swaps the snapshot atomically
//! ```
//!
//! Layers never parse YAML: they read a [`snapshot::Snapshot`] (or a typed
//! part of it) and convert the schema types into their own policies.
//!
//! ```
//! use mesh_core::load::{LoadOptions, load_str};
//!
//! let yaml = r#"
//! apiVersion: networking.istio.io/v1beta1
//! kind: VirtualService
//! metadata: { name: reviews-vs }
//! spec:
//!   hosts: [reviews]
//!   http:
//!   - route:
//!     - destination: { host: reviews, subset: v1 }
//! "#;
//! let loaded = load_str("reviews.yaml", yaml, &LoadOptions::default());
//! assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
//! assert_eq!(loaded.resources[0].id(), "VirtualService/default/reviews-vs");
//! ```

#![forbid(unsafe_code)]

pub mod diag;
pub mod host;
pub mod http;
pub mod identity;
pub mod load;
pub mod locate;
pub mod path;
pub mod reload;
pub mod resource;
pub mod schema;
pub mod snapshot;
pub mod validate;
pub mod yaml;
