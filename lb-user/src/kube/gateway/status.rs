//! The Gateway API status the mapping decides (pure data): conditions on GatewayClasses, Gateways
//! and their listeners, and HTTPRoute parents. kube/status.rs turns it into status patches.

use super::types::ParentRef;

/// One condition (`lastTransitionTime` is added by the writer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub type_: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
    pub observed_generation: Option<i64>,
}

impl Cond {
    pub fn yes(type_: &str, reason: &str, message: &str, gen: Option<i64>) -> Cond {
        Cond::new(type_, true, reason, message, gen)
    }

    pub fn no(type_: &str, reason: &str, message: &str, gen: Option<i64>) -> Cond {
        Cond::new(type_, false, reason, message, gen)
    }

    fn new(type_: &str, status: bool, reason: &str, message: &str, gen: Option<i64>) -> Cond {
        Cond {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            observed_generation: gen,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub classes: Vec<ClassStatus>,
    pub gateways: Vec<GatewayStatus>,
    pub routes: Vec<RouteStatus>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClassStatus {
    pub name: String,
    pub conditions: Vec<Cond>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayStatus {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub conditions: Vec<Cond>,
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerStatus {
    pub name: String,
    pub attached_routes: i32,
    pub conditions: Vec<Cond>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteStatus {
    pub namespace: String,
    pub name: String,
    pub parents: Vec<ParentStatus>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParentStatus {
    pub parent: ParentRef,
    pub conditions: Vec<Cond>,
}

impl ListenerStatus {
    fn programmed(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.type_ == "Programmed" && c.status)
    }
}

impl GatewayStatus {
    /// The Gateway's own conditions from its listeners': Accepted unless no listener is valid
    /// (reason ListenersNotValid when some are not), Programmed when at least one is.
    pub fn finish(&mut self) {
        let gen = self.generation;
        let ok = self.listeners.iter().filter(|l| l.programmed()).count();
        let all = self.listeners.len();
        let bad: Vec<&str> = (self.listeners.iter())
            .filter(|l| !l.programmed())
            .map(|l| l.name.as_str())
            .collect();
        let bad_msg = format!("invalid listeners: {}", bad.join(", "));
        self.conditions = if ok == all && all > 0 {
            vec![
                Cond::yes("Accepted", "Accepted", "all listeners accepted", gen),
                Cond::yes("Programmed", "Programmed", "all listeners programmed", gen),
            ]
        } else if ok > 0 {
            vec![
                Cond::yes("Accepted", "ListenersNotValid", &bad_msg, gen),
                Cond::yes("Programmed", "Programmed", &bad_msg, gen),
            ]
        } else {
            let msg = if all == 0 { "no listeners" } else { &bad_msg };
            vec![
                Cond::no("Accepted", "ListenersNotValid", msg, gen),
                Cond::no("Programmed", "Invalid", msg, gen),
            ]
        };
    }
}
