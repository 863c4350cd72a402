//! Who each applied L4 counter slot belongs to (service and endpoint names, weights), as the
//! metrics collector labels the per-CPU counters it reads.

use super::{L4Maps, L4Ops};
use std::sync::Arc;

/// One endpoint slot as metrics show it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointLabel {
    pub id: u32,
    pub service: Arc<str>,
    pub endpoint: Arc<str>,
    pub effective: u32,
}

/// The applied state, as the metrics collector names the counters it reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct L4Labels {
    /// (service id, name), by name.
    pub services: Vec<(u32, Arc<str>)>,
    /// By service name, then endpoint name.
    pub endpoints: Vec<EndpointLabel>,
    pub ring_slots_used: u32,
    /// `metrics.endpoint_labels` of the applied snapshot: per-endpoint series or none.
    pub endpoint_labels: bool,
}

impl<O: L4Ops> L4Maps<O> {
    /// Who each applied counter slot belongs to.
    pub fn labels(&self) -> L4Labels {
        let mut services: Vec<(u32, Arc<str>)> = self
            .services
            .values()
            .map(|s| (s.value.id, s.name.clone()))
            .collect();
        services.sort_by(|a, b| a.1.cmp(&b.1));
        let mut endpoints: Vec<EndpointLabel> = self
            .endpoints
            .iter()
            .filter_map(|((key, _), e)| {
                Some(EndpointLabel {
                    id: e.id,
                    service: self.services.get(key)?.name.clone(),
                    endpoint: e.name.clone(),
                    effective: e.effective,
                })
            })
            .collect();
        endpoints.sort_by(|a, b| (&a.service, &a.endpoint).cmp(&(&b.service, &b.endpoint)));
        L4Labels {
            services,
            endpoints,
            ring_slots_used: self.regions.used(),
            endpoint_labels: true,
        }
    }
}
