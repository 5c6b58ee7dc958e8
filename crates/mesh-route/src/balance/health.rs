//! Endpoint health as the balance stage sees it: which endpoints of a
//! destination may be picked, and whether to ignore that (panic mode).
//!
//! The balance stage runs before the outlier stage that learns, from each
//! attempt's result, which endpoints keep failing (SPEC 1.1 step 7, 5.4).
//! This crate cannot depend on the one that holds outlier detection, so the
//! balance stage asks a small trait instead: [`EndpointHealth`] gives a
//! per-destination [`DestinationHealth`] view, the pick skips endpoints the
//! view calls ineligible unless the view is in panic, and the view rides
//! along in the request's extensions as [`PickedHealth`] so the stage that
//! records the attempt's result reaches the same per-destination state
//! without a second lookup.
//!
//! Destinations without outlier detection get no view (`None`), and the
//! pick runs exactly as without a health source.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use mesh_core::snapshot::{Endpoint, Snapshot};

use crate::decision::DestinationKey;

/// What the balance stage tells the health source about one pick.
pub struct HealthQuery<'a> {
    /// The snapshot the request was routed with (its DestinationRules say
    /// how health is judged).
    pub snapshot: &'a Arc<Snapshot>,
    /// The destination (service, subset, port as routed).
    pub destination: &'a DestinationKey,
    /// The service port number the request addresses: with the
    /// destination, the cluster whose endpoints are judged together.
    pub port: u32,
    /// The balancer's endpoints; a view answers by index into this slice.
    /// The same `Arc` comes back while the endpoint set is unchanged.
    pub endpoints: &'a Arc<[Endpoint]>,
    /// The `address:port` the connector dials for an endpoint, the key of
    /// per-endpoint state (indexes change across reloads, addresses do not).
    pub authority: &'a dyn Fn(&Endpoint) -> Arc<str>,
}

impl fmt::Debug for HealthQuery<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthQuery")
            .field("destination", &self.destination)
            .field("port", &self.port)
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

/// A source of endpoint health for the balance stage (the outlier
/// detector implements it).
pub trait EndpointHealth: Send + Sync + 'static {
    /// The health of the queried destination's endpoints, or `None` when
    /// health is not tracked for it (every endpoint may be picked). Called
    /// once per attempt: it must be cheap.
    fn view(&self, query: &HealthQuery<'_>) -> Option<Arc<dyn DestinationHealth>>;
}

/// One destination's endpoint health, indexed like
/// [`HealthQuery::endpoints`].
pub trait DestinationHealth: Any + Send + Sync {
    /// Whether endpoint `index` may be picked (false while it is ejected).
    fn eligible(&self, index: usize) -> bool;

    /// Whether too few endpoints are healthy, so the balancer ignores
    /// health and spreads over all of them (Envoy's panic threshold).
    fn panic(&self) -> bool;
}

/// The health view a pick was made with, left in the request's extensions
/// next to the [`Target`](crate::layer::Target) (whose `endpoint` indexes
/// it) for the stage that records the attempt's result.
#[derive(Clone)]
pub struct PickedHealth(pub Arc<dyn DestinationHealth>);

impl fmt::Debug for PickedHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PickedHealth").finish_non_exhaustive()
    }
}
