//! Scalars that need checking (weights, CIDRs, durations, status codes): newtypes whose
//! Deserialize says exactly what is wrong, so every error names its field.

use ipnet::IpNet;
use serde::{de, Deserialize, Deserializer};
use std::{fmt, time::Duration};

/// Endpoint weight, 0..=256 as in HAProxy; 0 drains (no new requests), default 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weight(pub u16);

impl Weight {
    pub const MAX: u16 = 256;
}

impl Default for Weight {
    fn default() -> Self {
        Weight(1)
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = i64::deserialize(d)
            .map_err(|_| de::Error::custom("weight must be an integer between 0 and 256"))?;
        if !(0..=Weight::MAX as i64).contains(&raw) {
            return Err(de::Error::custom(format!(
                "weight must be between 0 and 256, got {raw}"
            )));
        }
        Ok(Weight(raw as u16))
    }
}

/// An IPv4 or IPv6 prefix (`10.0.0.0/8`, `2001:db8::/32`); a bare address means one host.
/// Host bits below the prefix are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(pub IpNet);

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        if let Ok(addr) = s.parse::<std::net::IpAddr>() {
            return Ok(Cidr(IpNet::from(addr)));
        }
        Err(format!(
            "invalid CIDR {s:?}: expected an address or address/prefix like 192.0.2.0/24 or 2001:db8::/32"
        ))
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)
            .map_err(|_| de::Error::custom("a CIDR must be a string like 192.0.2.0/24"))?;
        s.parse().map_err(de::Error::custom)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A duration written as `250ms`, `5s`, `2m` or `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Duration);

impl std::str::FromStr for Interval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid duration {s:?}: expected a number with a unit (ms, s, m, h), like 5s")
        };
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        if d.is_zero() {
            return Err(format!("invalid duration {s:?}: must be greater than zero"));
        }
        Ok(Interval(d))
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)
            .map_err(|_| de::Error::custom("a duration must be a string like 5s or 250ms"))?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_forms() {
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "192.0.2.7".parse::<Cidr>().unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            "2001:db8::1".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::1/128"
        );
        for bad in [
            "10.0.0.300/8",
            "10.0.0.0/33",
            "2001:db8::/129",
            "",
            "abc",
            "10.0.0.0/",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn interval_forms() {
        assert_eq!(
            "250ms".parse::<Interval>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "2m".parse::<Interval>().unwrap().0,
            Duration::from_secs(120)
        );
        for bad in ["5", "s", "5 s", "0s", "-1s", "1.5s", "5d"] {
            assert!(bad.parse::<Interval>().is_err(), "{bad}");
        }
    }
}
