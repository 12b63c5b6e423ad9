//! Resources and their exact accounting.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::ResourceName;

/// An amount of a resource, in fixed point with six decimals: sums and differences are
/// exact, so a million reservations and releases of `0.1` leave no drift.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    /// The number of units in one.
    pub const SCALE: i64 = 1_000_000;
    /// Nothing.
    pub const ZERO: Amount = Amount(0);
    /// The largest amount a cost or a capacity may have: 10^12 (a trillion cpus, or an
    /// exabyte of memory in MB). Larger amounts are refused as invalid, so that sums of
    /// many reservations never come near overflowing.
    pub const MAX: Amount = Amount(1_000_000_000_000 * Self::SCALE);

    /// From a count of millionths.
    pub const fn from_micros(micros: i64) -> Self {
        Amount(micros)
    }

    /// The amount in millionths.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// From a decimal number, rounded to six decimals; `None` when it is not finite or
    /// too large to represent.
    pub fn from_f64(x: f64) -> Option<Self> {
        let scaled = (x * Self::SCALE as f64).round();
        (scaled.is_finite() && scaled.abs() < i64::MAX as f64).then_some(Amount(scaled as i64))
    }

    /// The amount as a decimal number (for display and ratios, not for accounting).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Self::SCALE as f64
    }

    /// True when below zero.
    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// True when the amount may be a cost or a capacity: not negative, not the mark of
    /// a number that was not finite, and at most [`Amount::MAX`].
    ///
    /// ```
    /// # mod handoff { pub use handoff_core::*; }
    /// use handoff::Amount;
    /// assert!(Amount::from(2).is_valid());
    /// assert!(!Amount::from(-1).is_valid());
    /// assert!(!Amount::from(f64::NAN).is_valid());
    /// assert!(!Amount::from(9e12).is_valid());
    /// ```
    pub fn is_valid(self) -> bool {
        (0..=Self::MAX.0).contains(&self.0)
    }

    fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }
}

impl From<u32> for Amount {
    fn from(n: u32) -> Self {
        Amount(i64::from(n) * Self::SCALE)
    }
}

impl From<i32> for Amount {
    fn from(n: i32) -> Self {
        Amount(i64::from(n) * Self::SCALE)
    }
}

/// Non-finite or huge inputs become an invalid (negative) amount, which
/// [`Dag::validate`](crate::Dag::validate) and trackers reject with a typed error.
impl From<f64> for Amount {
    fn from(x: f64) -> Self {
        Amount::from_f64(x).unwrap_or(Amount(i64::MIN))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == i64::MIN {
            return f.write_str("<not a finite number>");
        }
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (int, frac) = (abs / Self::SCALE as u64, abs % Self::SCALE as u64);
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let frac = format!("{frac:06}");
            write!(f, "{sign}{int}.{}", frac.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A set of resource amounts: a function's cost, or a node's capacity. `cpu`, `memory`
/// (MB) and `gpu` are names like any other; a name missing from the map is zero.
///
/// ```
/// # mod handoff { pub use handoff_core::*; }
/// use handoff::Resources;
/// let cost = Resources::new().cpu(0.5).memory(2000).with("licence", 1);
/// let node = Resources::new().cpu(4).memory(8000).with("licence", 2);
/// assert!(cost.fits_in(&node));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Resources(BTreeMap<ResourceName, Amount>);

impl Resources {
    /// No resources.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets an amount of the named resource.
    pub fn with(mut self, name: impl Into<ResourceName>, amount: impl Into<Amount>) -> Self {
        self.set(name, amount);
        self
    }

    /// Sets `cpu`.
    pub fn cpu(self, amount: impl Into<Amount>) -> Self {
        self.with("cpu", amount)
    }

    /// Sets `memory`, in MB.
    pub fn memory(self, amount: impl Into<Amount>) -> Self {
        self.with("memory", amount)
    }

    /// Sets `gpu`.
    pub fn gpu(self, amount: impl Into<Amount>) -> Self {
        self.with("gpu", amount)
    }

    /// Sets an amount of the named resource, in place.
    pub fn set(&mut self, name: impl Into<ResourceName>, amount: impl Into<Amount>) {
        self.0.insert(name.into(), amount.into());
    }

    /// The amount of a resource (zero when absent).
    pub fn get(&self, name: impl AsRef<str>) -> Amount {
        self.0.get(name.as_ref()).copied().unwrap_or(Amount::ZERO)
    }

    /// The resources and amounts, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&ResourceName, Amount)> {
        self.0.iter().map(|(k, v)| (k, *v))
    }

    /// True when no amount is above zero.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(|a| *a <= Amount::ZERO)
    }

    /// The first resource whose amount is negative, not a finite number, or above
    /// [`Amount::MAX`].
    pub fn first_invalid(&self) -> Option<(&ResourceName, Amount)> {
        self.iter().find(|(_, a)| !a.is_valid())
    }

    /// True when every amount here is at most the same amount in `other`.
    pub fn fits_in(&self, other: &Resources) -> bool {
        self.iter().all(|(name, amount)| amount <= other.get(name))
    }

    /// The resources of `self` that `other` lacks, with the amount missing.
    pub fn shortfall(&self, other: &Resources) -> Resources {
        Resources(
            self.iter()
                .filter_map(|(name, need)| {
                    let have = other.get(name);
                    (need > have).then(|| (name.clone(), Amount(need.0 - have.0)))
                })
                .collect(),
        )
    }

    /// Adds `other`, amount by amount; `None` on overflow.
    pub fn checked_add(&self, other: &Resources) -> Option<Resources> {
        let mut out = self.clone();
        for (name, amount) in other.iter() {
            let sum = out.get(name).checked_add(amount)?;
            out.0.insert(name.clone(), sum);
        }
        Some(out)
    }

    /// The sum of several costs, amount by amount, each amount capped at the largest
    /// representable (a sum that overflows fits no node): what a collocation group needs
    /// of its node, its members possibly running at once.
    ///
    /// ```
    /// # mod handoff { pub use handoff_core::*; }
    /// use handoff::Resources;
    /// let a = Resources::new().cpu(1).memory(100);
    /// let b = Resources::new().cpu(0.5).gpu(1);
    /// let total = Resources::saturating_sum([&a, &b]);
    /// assert_eq!(total, Resources::new().cpu(1.5).memory(100).gpu(1));
    /// assert!(!total.fits_in(&Resources::new().cpu(1).memory(100).gpu(1)));
    /// ```
    pub fn saturating_sum<'a>(costs: impl IntoIterator<Item = &'a Resources>) -> Resources {
        let mut out = Resources::new();
        for cost in costs {
            for (name, amount) in cost.iter() {
                let sum = out.get(name).0.saturating_add(amount.0);
                out.0.insert(name.clone(), Amount(sum));
            }
        }
        out
    }

    /// Subtracts `other`, amount by amount; `None` when any result would be negative.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        let mut out = self.clone();
        for (name, amount) in other.iter() {
            let left = out.get(name).0.checked_sub(amount.0)?;
            if left < 0 {
                return None;
            }
            out.0.insert(name.clone(), Amount(left));
        }
        Some(out)
    }

    /// Subtracts `other`, flooring each amount at zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        let mut out = self.clone();
        for (name, amount) in other.iter() {
            let left = out.get(name).0.saturating_sub(amount.0).max(0);
            out.0.insert(name.clone(), Amount(left));
        }
        out
    }

    /// How many times this cost fits in `capacity` at once (`u64::MAX` for a cost of
    /// nothing), e.g. 4 for `cpu: 0.5` in `cpu: 2`.
    ///
    /// ```
    /// # mod handoff { pub use handoff_core::*; }
    /// use handoff::Resources;
    /// let node = Resources::new().cpu(2).memory(1000);
    /// assert_eq!(Resources::new().cpu(0.5).times_in(&node), 4);
    /// assert_eq!(Resources::new().cpu(1).memory(600).times_in(&node), 1);
    /// assert_eq!(Resources::new().gpu(1).times_in(&node), 0);
    /// assert_eq!(Resources::new().times_in(&node), u64::MAX);
    /// ```
    pub fn times_in(&self, capacity: &Resources) -> u64 {
        self.iter()
            .filter(|(_, need)| need.0 > 0)
            .map(|(name, need)| (capacity.get(name).0.max(0) / need.0) as u64)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// The sum of the amounts of `self` that `available` lacks (0 when `self` fits):
    /// how far a node is from taking this cost.
    pub fn missing_from(&self, available: &Resources) -> i64 {
        self.iter()
            .map(|(name, need)| need.0.saturating_sub(available.get(name).0).max(0))
            .fold(0_i64, i64::saturating_add)
    }

    /// The free fraction of this capacity that `available` represents, averaged over the
    /// resources of this capacity (1.0 for an idle node; used by load balancing).
    pub fn free_ratio(&self, available: &Resources) -> f64 {
        let mut sum = 0.0;
        let mut n = 0_u32;
        for (name, total) in self.iter().filter(|(_, t)| *t > Amount::ZERO) {
            sum += available.get(name).as_f64() / total.as_f64();
            n += 1;
        }
        if n == 0 { 0.0 } else { sum / f64::from(n) }
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, amount)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}: {amount}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<N: Into<ResourceName>, A: Into<Amount>> FromIterator<(N, A)> for Resources {
    fn from_iter<I: IntoIterator<Item = (N, A)>>(iter: I) -> Self {
        Resources(
            iter.into_iter()
                .map(|(n, a)| (n.into(), a.into()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_display_as_decimals() {
        assert_eq!(Amount::from(0.5).to_string(), "0.5");
        assert_eq!(Amount::from(3).to_string(), "3");
        assert_eq!(Amount::from(-1.25).to_string(), "-1.25");
        assert!(Amount::from(f64::NAN).is_negative());
    }

    #[test]
    fn fits_and_shortfall() {
        let cap = Resources::new().cpu(2).memory(4000);
        let cost = Resources::new().cpu(3).memory(1000).gpu(1);
        assert!(!cost.fits_in(&cap));
        assert_eq!(cost.shortfall(&cap), Resources::new().cpu(1).gpu(1));
        assert!(Resources::new().cpu(2).fits_in(&cap));
    }

    #[test]
    fn sub_and_add_are_exact() {
        let mut avail = Resources::new().cpu(1);
        let tenth = Resources::new().cpu(0.1);
        for _ in 0..10 {
            avail = avail.checked_sub(&tenth).expect("fits");
        }
        assert_eq!(avail.get("cpu"), Amount::ZERO);
        assert_eq!(avail.checked_sub(&tenth), None);
    }
}
