//! The L4 dataplane's maps (layouts and names in lb_common::l4). Sizes here are defaults: the
//! loader resizes the ring array and the flow/NAT tables from the config.

use crate::nat::Rewrite;
use aya_ebpf::bindings::bpf_fib_lookup;
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray};
use lb_common::{
    EndpointValue, FlowKey, FlowValue, L4Config, L4Stat, NatValue, RateKey, ServiceKey,
    ServiceValue, L4_ENDPOINT_CAPACITY, L4_FLOW_CAPACITY, L4_RING_SLOTS, L4_SERVICE_CAPACITY,
    PROTECT_CAPACITY, RATE_CAPACITY, TX_PORTS_CAPACITY,
};

/// BPF_F_NO_COMMON_LRU: per-CPU LRU lists over one shared table (no global LRU lock).
const NO_COMMON_LRU: u32 = 2;

#[map(name = "LB_L4_SVC")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::with_max_entries(L4_SERVICE_CAPACITY, 0);

#[map(name = "LB_L4_RING")]
pub static RING: Array<u32> = Array::with_max_entries(L4_RING_SLOTS, 0);

#[map(name = "LB_L4_EP")]
pub static ENDPOINTS: Array<EndpointValue> = Array::with_max_entries(L4_ENDPOINT_CAPACITY, 0);

#[map(name = "LB_L4_FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(L4_FLOW_CAPACITY, NO_COMMON_LRU);

#[map(name = "LB_L4_NAT")]
pub static NAT: LruHashMap<FlowKey, NatValue> =
    LruHashMap::with_max_entries(L4_FLOW_CAPACITY, NO_COMMON_LRU);

#[map(name = "LB_L4_CFG")]
pub static CONFIG: Array<L4Config> = Array::with_max_entries(1, 0);

#[map(name = "LB_PROTECT")]
pub static PROTECT: HashMap<ServiceKey, u32> = HashMap::with_max_entries(PROTECT_CAPACITY, 0);

#[map(name = "LB_RATE")]
pub static RATE: LruHashMap<RateKey, u64> =
    LruHashMap::with_max_entries(RATE_CAPACITY, NO_COMMON_LRU);

#[map(name = "LB_L4_SVC_STATS")]
pub static SERVICE_STATS: PerCpuArray<L4Stat> =
    PerCpuArray::with_max_entries(L4_SERVICE_CAPACITY, 0);

#[map(name = "LB_L4_EP_STATS")]
pub static ENDPOINT_STATS: PerCpuArray<L4Stat> =
    PerCpuArray::with_max_entries(L4_ENDPOINT_CAPACITY, 0);

#[map(name = "LB_TX_PORTS")]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(TX_PORTS_CAPACITY, 0);

/// Per-CPU scratch space for values too large for the 512-byte BPF stack.
#[repr(C)]
pub struct Scratch {
    pub fib: bpf_fib_lookup,
    /// The packet's flow (client->VIP, or endpoint->node for a reply).
    pub key: FlowKey,
    pub skey: ServiceKey,
    pub rate: RateKey,
    pub flow: FlowValue,
    pub rkey: FlowKey,
    pub nat: NatValue,
    /// What the packet is translated to.
    pub rw: Rewrite,
    /// New source and destination address words, for bpf_csum_diff.
    pub addrs: [u32; 8],
    /// New source and destination ports (network order).
    pub ports: [u16; 2],
    pub _pad: [u16; 2],
}

#[map(name = "LB_SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
