//! L4 apply tests against a fake that records every map operation, models the maps, and checks
//! after each one that every service points at a fully written ring of live endpoints.

use super::*;
use crate::config::parse;
use crate::snapshot::{build, l4::L4View};
use anyhow::bail;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Ep(u32, u8, u32),
    Ring(u32, u32),
    Svc(ServiceKey, ServiceValue),
    DelSvc(ServiceKey),
    ResetSvc(u32),
    ResetEp(u32),
    Config,
    Protect,
    Unprotect,
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Ep(_, 1, _) => "ep",
            Op::Ep(..) => "dead",
            Op::Ring(..) => "ring",
            Op::Svc(..) => "svc",
            Op::DelSvc(..) => "del",
            Op::ResetSvc(_) => "zs",
            Op::ResetEp(_) => "ze",
            Op::Config => "cfg",
            Op::Protect => "prot",
            Op::Unprotect => "unprot",
        }
    }
}

struct Fake {
    log: Vec<Op>,
    /// The operation (index into `log` order) that fails.
    fail_at: Option<usize>,
    services: HashMap<ServiceKey, ServiceValue>,
    ring: Vec<u32>,
    eps: BTreeMap<u32, EndpointValue>,
}

impl Fake {
    fn new(slots: u32) -> Self {
        Fake {
            log: Vec::new(),
            fail_at: None,
            services: HashMap::new(),
            ring: vec![u32::MAX; slots as usize],
            eps: BTreeMap::new(),
        }
    }

    fn step(&mut self, op: Op) -> Result<()> {
        if self.fail_at == Some(self.log.len()) {
            self.fail_at = None;
            bail!("injected failure at {op:?}");
        }
        self.log.push(op);
        Ok(())
    }

    /// Every service's ring slots name live endpoints.
    fn check(&self) {
        for (k, v) in &self.services {
            for slot in v.ring_off..v.ring_off + v.ring_size {
                let id = self.ring[slot as usize];
                let live = self.eps.get(&id).map(|e| e.live);
                assert_eq!(
                    live,
                    Some(1),
                    "service port {} slot {slot} -> {id}",
                    u16::from_be(k.port)
                );
            }
        }
    }

    /// Per service (by port): the endpoint port of each ring slot, as the XDP program sees it.
    fn served(&self) -> BTreeMap<u16, Vec<u16>> {
        self.services
            .iter()
            .map(|(k, v)| {
                let slots = (v.ring_off..v.ring_off + v.ring_size)
                    .map(|s| u16::from_be(self.eps[&self.ring[s as usize]].port))
                    .collect();
                (u16::from_be(k.port), slots)
            })
            .collect()
    }
}

impl L4Ops for Fake {
    fn set_endpoint(&mut self, id: u32, v: &EndpointValue) -> Result<()> {
        self.step(Op::Ep(id, v.live, v.gen))?;
        self.eps.insert(id, *v);
        self.check();
        Ok(())
    }
    fn write_ring(&mut self, off: u32, ids: &[u32]) -> Result<()> {
        self.step(Op::Ring(off, ids.len() as u32))?;
        self.ring[off as usize..off as usize + ids.len()].copy_from_slice(ids);
        self.check();
        Ok(())
    }
    fn set_service(&mut self, key: &ServiceKey, v: &ServiceValue) -> Result<()> {
        self.step(Op::Svc(*key, *v))?;
        self.services.insert(*key, *v);
        self.check();
        Ok(())
    }
    fn remove_service(&mut self, key: &ServiceKey) -> Result<()> {
        self.step(Op::DelSvc(*key))?;
        self.services.remove(key);
        Ok(())
    }
    fn reset_service_stats(&mut self, id: u32) -> Result<()> {
        self.step(Op::ResetSvc(id))
    }
    fn reset_endpoint_stats(&mut self, id: u32) -> Result<()> {
        self.step(Op::ResetEp(id))
    }
    fn set_config(&mut self, _: &L4Config) -> Result<()> {
        self.step(Op::Config)
    }
    fn set_protect(&mut self, _: &ServiceKey) -> Result<()> {
        self.step(Op::Protect)
    }
    fn remove_protect(&mut self, _: &ServiceKey) -> Result<()> {
        self.step(Op::Unprotect)
    }
}

/// Services on ports 53 (cluster a) and 80 (cluster b), 13-slot rings; `a` and `b` list the
/// endpoint ports (weight 1, or `port:weight`).
fn view(a: &[&str], b: &[&str], extra: &str) -> L4View {
    let eps = |v: &[&str]| -> String {
        v.iter()
            .map(|e| match e.split_once(':') {
                Some((p, w)) => format!("{{address: \"10.1.0.1:{p}\", weight: {w}}}"),
                None => format!("{{address: \"10.1.0.1:{e}\"}}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let y = format!(
        "l4_services:\n  - {{name: a, vip: 10.0.0.1, port: 53, protocol: udp, cluster: a, maglev_size: 13}}\n  - {{name: b, vip: 10.0.0.1, port: 80, protocol: tcp, cluster: b, maglev_size: 13}}\n{extra}clusters:\n  - {{name: a, endpoints: [{}]}}\n  - {{name: b, endpoints: [{}]}}\nxdp: {{l4: {{snat_v4: 10.0.0.2}}}}\n",
        eps(a),
        eps(b)
    );
    (*build(&parse(&y).unwrap(), Default::default(), 1).l4).clone()
}

fn kinds(log: &[Op]) -> String {
    log.iter().map(Op::kind).collect::<Vec<_>>().join(" ")
}

fn maps() -> L4Maps<Fake> {
    L4Maps::new(Fake::new(64), 64)
}

#[test]
fn first_apply_writes_endpoints_then_rings_then_services() {
    let mut m = maps();
    let r = m.apply(&view(&["1", "2"], &["3"], "")).unwrap();
    assert_eq!(
        kinds(&m.ops().log),
        "cfg ze ep ze ep ze ep ring ring zs svc zs svc"
    );
    assert_eq!(
        (r.services_added, r.endpoints_added, r.rings_written),
        (2, 3, 2)
    );
    assert!(r.settings_changed);
    assert_eq!(m.ops().served()[&53].len(), 13);
    assert_eq!(m.ring_slots_used(), 26);
    // The same view again: nothing to write.
    m.ops_mut().log.clear();
    assert_eq!(
        m.apply(&view(&["1", "2"], &["3"], "")).unwrap(),
        L4Report::default()
    );
    assert!(m.ops().log.is_empty());
}

#[test]
fn a_ring_change_writes_new_first_flips_then_kills_the_removed_endpoint_last() {
    let mut m = maps();
    m.apply(&view(&["1", "2"], &["3"], "")).unwrap();
    let old = m.ops().services.clone();
    m.ops_mut().log.clear();
    // Endpoint 2 leaves a, 4 joins it; b untouched.
    let r = m.apply(&view(&["1", "4"], &["3"], "")).unwrap();
    assert_eq!(kinds(&m.ops().log), "ze ep ring svc dead");
    let log = &m.ops().log;
    let Op::Svc(key, v) = &log[3] else {
        panic!("{log:?}")
    };
    let was = old[key];
    assert_eq!(v.id, was.id, "stable service id");
    assert_ne!(v.ring_off, was.ring_off, "a new region, never the live one");
    assert_eq!(
        log[4],
        Op::Ep(1, 0, 1),
        "endpoint 2 (id 1) dead, same generation"
    );
    assert_eq!(
        (r.services_updated, r.endpoints_added, r.endpoints_removed),
        (1, 1, 1)
    );
    assert_eq!(m.ring_slots_used(), 26, "the old region was freed");
    assert!(m.ops().served()[&53].iter().all(|p| *p == 1 || *p == 4));
}

#[test]
fn weight_zero_leaves_the_ring_but_stays_live() {
    let mut m = maps();
    m.apply(&view(&["1", "2"], &["3"], "")).unwrap();
    m.ops_mut().log.clear();
    m.apply(&view(&["1", "2:0"], &["3"], "")).unwrap();
    assert_eq!(
        kinds(&m.ops().log),
        "ring svc",
        "no endpoint write: 2 stays live"
    );
    assert!(m.ops().served()[&53].iter().all(|p| *p == 1));
    // Every endpoint at weight 0: the service takes no new flows, its endpoints stay live.
    m.ops_mut().log.clear();
    m.apply(&view(&["1:0", "2:0"], &["3"], "")).unwrap();
    let log = &m.ops().log;
    assert_eq!(kinds(log), "svc");
    assert!(matches!(log[0], Op::Svc(_, v) if v.ring_size == 0));
    assert_eq!(m.ring_slots_used(), 13);
    assert!(m.ops().eps.values().all(|e| e.live == 1));
}

#[test]
fn removed_service_is_deleted_before_its_endpoints_die_and_ids_come_back_with_new_gens() {
    // Room for 2 services and 4 endpoints: freed ids are reused once the fresh ones run out.
    let mut m = L4Maps::with_capacities(Fake::new(64), 64, 2, 4);
    m.apply(&view(&["1", "2"], &["3"], "")).unwrap();
    m.ops_mut().log.clear();
    let only_a = {
        let mut v = view(&["1", "2"], &["3"], "");
        v.services.truncate(1);
        v
    };
    let r = m.apply(&only_a).unwrap();
    assert_eq!(kinds(&m.ops().log), "del dead");
    assert_eq!((r.services_removed, r.endpoints_removed), (1, 1));
    assert_eq!(m.ring_slots_used(), 13);
    // b comes back: the last fresh id (3) first, then its old slot 2 with generation 2.
    m.ops_mut().log.clear();
    m.apply(&view(&["1", "2"], &["3", "5"], "")).unwrap();
    let eps: Vec<Op> = m
        .ops()
        .log
        .iter()
        .filter(|o| o.kind() == "ep")
        .cloned()
        .collect();
    assert_eq!(eps, [Op::Ep(3, 1, 1), Op::Ep(2, 1, 2)]);
    assert!(
        m.ops().log.contains(&Op::ResetSvc(1)),
        "b's old id, counters zeroed"
    );
    // A fifth endpoint does not fit: a clear error, and what was applied keeps serving.
    let before = m.ops().served();
    let err = m
        .apply(&view(&["1", "2", "7"], &["3", "5"], ""))
        .unwrap_err();
    assert_eq!(err.to_string(), "all 4 L4 endpoint slots are in use");
    assert_eq!(m.ops().served(), before);
    let labels = m.labels();
    assert_eq!(
        labels.services.iter().map(|s| &*s.1).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let names: Vec<String> = labels
        .endpoints
        .iter()
        .map(|e| format!("{}/{}#{}", e.service, e.endpoint, e.id))
        .collect();
    assert_eq!(
        names,
        [
            "a/10.1.0.1:1#0",
            "a/10.1.0.1:2#1",
            "b/10.1.0.1:3#3",
            "b/10.1.0.1:5#2"
        ]
    );
}

#[test]
fn protect_added_before_the_config_flip_and_removed_after() {
    let mut m = maps();
    let mut v = view(&["1"], &["3"], "");
    v.protect = vec![v.services[0].key];
    v.settings.flags |= lb_common::CFG_RATE_PROTECTED;
    m.apply(&v).unwrap();
    assert_eq!(kinds(&m.ops().log[..2]), "prot cfg");
    m.ops_mut().log.clear();
    v.protect.clear();
    v.settings.flags = lb_common::CFG_RATE_ALL;
    let r = m.apply(&v).unwrap();
    assert_eq!(kinds(&m.ops().log), "cfg unprot");
    assert_eq!(
        (r.protect_added, r.protect_removed, r.settings_changed),
        (0, 1, true)
    );
}

/// Every operation of a transition fails once in turn: the maps stay consistent (checked by
/// the fake at each step), nothing leaks, and the next apply reaches the target.
#[test]
fn a_failure_at_any_step_leaves_a_consistent_state_that_the_next_apply_completes() {
    let from = view(&["1", "2"], &["3"], "");
    let to = {
        let mut v = view(&["1", "4"], &["3:2", "6"], "");
        v.services.swap(0, 1);
        v
    };
    let mut clean = maps();
    clean.apply(&from).unwrap();
    clean.ops_mut().log.clear();
    clean.apply(&to).unwrap();
    let steps = clean.ops().log.len();
    assert!(steps >= 8, "{:?}", clean.ops().log);
    for fail in 0..steps {
        let mut m = maps();
        m.apply(&from).unwrap();
        let before = m.ops().served();
        m.ops_mut().log.clear();
        m.ops_mut().fail_at = Some(fail);
        let err = m.apply(&to).unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        if fail == 0 {
            assert_eq!(m.ops().served(), before, "nothing changed");
        }
        m.apply(&to).unwrap();
        assert_eq!(
            m.ops().served(),
            clean.ops().served(),
            "failing step {fail}"
        );
        assert_eq!(
            m.ring_slots_used(),
            26,
            "failing step {fail}: regions leaked"
        );
        let live = m.ops().eps.values().filter(|e| e.live == 1).count();
        assert_eq!(live, 4, "failing step {fail}");
    }
}

#[test]
fn ring_array_exhaustion_fails_clearly_and_keeps_serving() {
    let mut m = L4Maps::new(Fake::new(40), 40);
    m.apply(&view(&["1", "2"], &["3"], "")).unwrap();
    let before = m.ops().served();
    // Both rings change: a's new ring fits in the 14 free slots, b's does not.
    let err = m.apply(&view(&["1", "2:3"], &["3", "4"], "")).unwrap_err();
    assert!(err.to_string().contains("no run of 13 free slots"), "{err}");
    assert_eq!(m.ops().served(), before, "no service flipped");
    assert_eq!(m.ring_slots_used(), 26, "a's unused new ring freed");
    // Once one ring fits at a time, the same change goes through.
    m.apply(&view(&["1", "2:3"], &["3"], "")).unwrap();
    m.apply(&view(&["1", "2:3"], &["3", "4"], "")).unwrap();
    assert_eq!(m.ring_slots_used(), 26);
}
