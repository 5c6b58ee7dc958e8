//! Per-endpoint connection state in copy-on-write maps: read with one
//! atomic load on every request, written only when an endpoint is seen for
//! the first time.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// The entry for `key`, inserting a default one on first use. Concurrent
/// first uses agree on one entry (the first insert wins).
pub(crate) fn get_or_default<V: Default>(
    map: &ArcSwap<HashMap<Arc<str>, Arc<V>>>,
    key: &Arc<str>,
) -> Arc<V> {
    if let Some(value) = map.load().get(key) {
        return Arc::clone(value);
    }
    let fresh = Arc::new(V::default());
    let mut chosen = Arc::clone(&fresh);
    map.rcu(|current| {
        let mut next = HashMap::clone(current);
        chosen = Arc::clone(
            next.entry(Arc::clone(key))
                .or_insert_with(|| Arc::clone(&fresh)),
        );
        next
    });
    chosen
}
