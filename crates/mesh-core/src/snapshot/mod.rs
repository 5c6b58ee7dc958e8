//! The compiled snapshot: the immutable view of the configuration that the
//! request path reads.
//!
//! A snapshot is compiled once per (re)load from resources that passed
//! validation, then shared behind an `Arc` and swapped whole. Everything a
//! request needs is a hash lookup: the route table for a host, the
//! destination policy for a host and subset, the endpoints of a service
//! subset. Mutable runtime state (outlier ejections, pool counters, retry
//! budgets) never lives here: it is keyed by destination outside the snapshot
//! so that it survives reloads.

mod index;

use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use index::*;

use crate::diag::Diagnostics;
use crate::load::Loaded;
use crate::resource::Resource;

/// One compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every swap.
    pub generation: u64,
    /// SHA-256 of the resources' canonical JSON (comments, formatting and
    /// file layout do not change it), hex-encoded.
    pub content_hash: String,
    /// Every accepted resource, in load order.
    pub resources: Vec<Arc<Resource>>,
    /// Warnings and notes of the load that produced it.
    pub diagnostics: Diagnostics,
    /// The lookup tables.
    pub index: Index,
}

impl Snapshot {
    /// Compiles loaded (error-free) resources into a snapshot.
    pub fn compile(generation: u64, loaded: Loaded) -> Snapshot {
        let resources: Vec<Arc<Resource>> = loaded.resources.into_iter().map(Arc::new).collect();
        // Hashing and indexing are independent: do them side by side.
        let (content_hash, index) = std::thread::scope(|scope| {
            let hash = scope.spawn(|| content_hash(&resources));
            let index = Index::build(&resources);
            let hash = hash
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (hash, index)
        });
        Snapshot {
            generation,
            content_hash,
            resources,
            diagnostics: loaded.diagnostics,
            index,
        }
    }

    /// An empty snapshot (no configuration at all).
    pub fn empty() -> Snapshot {
        Snapshot::compile(0, Loaded::default())
    }

    /// The `/config_dump` form: generation, hash, every resource as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "generation": self.generation,
            "contentHash": self.content_hash,
            "resources": self.resources.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
            "diagnostics": self.diagnostics,
        })
    }
}

/// The parts of a resource that define its content, in a fixed order.
#[derive(serde::Serialize)]
struct Canonical<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    metadata: &'a crate::schema::common::ObjectMeta,
    spec: &'a crate::resource::Spec,
}

/// Feeds serialized bytes straight into the hasher, without building a
/// JSON value or buffer per resource.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn content_hash(resources: &[Arc<Resource>]) -> String {
    let mut hasher = Sha256::new();
    for r in resources {
        let canonical = Canonical {
            api_version: &r.api_version,
            kind: r.kind.name(),
            metadata: &r.meta,
            spec: &r.spec,
        };
        // Structs serialize in declaration order and maps are BTreeMaps, so
        // the same content always gives the same bytes. Serializing to a
        // hasher cannot fail for these types; if it ever did, the resource
        // would simply not contribute, which only risks a spurious reload.
        let _ = serde_json::to_writer(HashWriter(&mut hasher), &canonical);
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
