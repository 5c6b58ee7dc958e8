//! Per-endpoint connection state in copy-on-write maps: read with one
//! atomic load on every request, written only when an endpoint is seen for
//! the first time.

use std::sync::Arc;

use arc_swap::ArcSwap;

/// The map type: foldhash, not std's SipHash, since every request hashes
/// its endpoint address here (SipHash cost ~400 instructions per request
/// for a 15-byte address; the keys come from configuration and DNS, and
/// the hasher is still seeded per process).
pub(crate) type CowMap<V> = ArcSwap<mesh_core::snapshot::HashMap<Arc<str>, Arc<V>>>;

/// The entry for `key`, inserting a default one on first use. Concurrent
/// first uses agree on one entry (the first insert wins).
pub(crate) fn get_or_default<V: Default>(map: &CowMap<V>, key: &Arc<str>) -> Arc<V> {
    if let Some(value) = map.load().get(key) {
        return Arc::clone(value);
    }
    let fresh = Arc::new(V::default());
    let mut chosen = Arc::clone(&fresh);
    map.rcu(|current| {
        let mut next = mesh_core::snapshot::HashMap::clone(current);
        chosen = Arc::clone(
            next.entry(Arc::clone(key))
                .or_insert_with(|| Arc::clone(&fresh)),
        );
        next
    });
    chosen
}
