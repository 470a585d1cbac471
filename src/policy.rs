//! [`Policy`]: which nodes may run an agent, and which of them it prefers.

use crate::{Capacity, CellError};
use core::cmp::Reverse;
use core::fmt;
use core::str::FromStr;

/// How many preferred architectures a policy lists at most.
pub const MAX_ARCHITECTURES: usize = 8;

/// A policy with [`Policy::min_battery_percent`] at or below this allows low battery.
pub const LOW_BATTERY_PERCENT: u8 = 20;

/// A CPU architecture a node runs on. The discriminant is the byte used on the wire.
///
/// ```
/// use mielin_cells::Arch;
///
/// let arch: Arch = "aarch64".parse().unwrap();
/// assert_eq!(arch, Arch::Aarch64);
/// assert_eq!(arch.to_string(), "aarch64");
/// assert_eq!("riscv32".parse(), Ok(Arch::Riscv32));
/// assert!("mips".parse::<Arch>().is_err());
/// assert_eq!(Arch::from_tag(arch.tag()), Some(arch)); // the byte on the wire
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[non_exhaustive]
pub enum Arch {
    /// 64-bit x86.
    X86_64 = 0,
    /// 64-bit ARM (AArch64).
    Aarch64 = 1,
    /// 32-bit ARM, including Cortex-M microcontrollers.
    Arm = 2,
    /// 32-bit RISC-V.
    Riscv32 = 3,
    /// 64-bit RISC-V.
    Riscv64 = 4,
    /// 32-bit x86.
    X86 = 5,
    /// Xtensa (e.g. ESP32).
    Xtensa = 6,
}

impl Arch {
    /// The architecture this code was compiled for, if it is one of the above.
    pub const fn current() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else if cfg!(target_arch = "arm") {
            Some(Arch::Arm)
        } else if cfg!(target_arch = "riscv32") {
            Some(Arch::Riscv32)
        } else if cfg!(target_arch = "riscv64") {
            Some(Arch::Riscv64)
        } else if cfg!(target_arch = "x86") {
            Some(Arch::X86)
        } else if cfg!(target_arch = "xtensa") {
            Some(Arch::Xtensa)
        } else {
            None
        }
    }

    /// The architecture with this wire tag, if any.
    pub const fn from_tag(tag: u8) -> Option<Arch> {
        Some(match tag {
            0 => Arch::X86_64,
            1 => Arch::Aarch64,
            2 => Arch::Arm,
            3 => Arch::Riscv32,
            4 => Arch::Riscv64,
            5 => Arch::X86,
            6 => Arch::Xtensa,
            _ => return None,
        })
    }

    /// The byte that stands for this architecture on the wire.
    pub const fn tag(self) -> u8 {
        self as u8
    }

    /// The architecture's name, as Rust's `target_arch` spells it: `"x86_64"`, `"aarch64"`,
    /// `"arm"`, `"riscv32"`, `"riscv64"`, `"x86"`, `"xtensa"`. [`Display`](fmt::Display)
    /// writes it and [`FromStr`] reads it back.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Arm => "arm",
            Arch::Riscv32 => "riscv32",
            Arch::Riscv64 => "riscv64",
            Arch::X86 => "x86",
            Arch::Xtensa => "xtensa",
        }
    }
}

/// Writes [`Arch::name`], e.g. `aarch64`.
impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Reads an architecture from its name, ignoring ASCII case: the `target_arch` names that
/// [`Arch::name`] writes (`"x86_64"`, `"aarch64"`, `"arm"`, `"riscv32"`, `"riscv64"`, `"x86"`,
/// `"xtensa"`), plus the common aliases `"amd64"`, `"x86-64"` (x86_64), `"arm64"` (aarch64),
/// `"i386"`, `"i686"` (x86).
impl FromStr for Arch {
    type Err = ParseArchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const NAMES: [(&str, Arch); 12] = [
            ("x86_64", Arch::X86_64),
            ("amd64", Arch::X86_64),
            ("x86-64", Arch::X86_64),
            ("aarch64", Arch::Aarch64),
            ("arm64", Arch::Aarch64),
            ("arm", Arch::Arm),
            ("riscv32", Arch::Riscv32),
            ("riscv64", Arch::Riscv64),
            ("x86", Arch::X86),
            ("i386", Arch::X86),
            ("i686", Arch::X86),
            ("xtensa", Arch::Xtensa),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|&(_, arch)| arch)
            .ok_or(ParseArchError)
    }
}

/// A string that names no [`Arch`] (see its [`FromStr`] implementation for the names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error(
    "unknown architecture name: expected one of x86_64, aarch64, arm, riscv32, riscv64, x86, xtensa"
)]
#[non_exhaustive]
pub struct ParseArchError;

/// What a node reports about itself when agents are placed.
///
/// ```
/// use mielin_cells::{Arch, CellError, NodeStatus, Policy, PolicyViolation};
///
/// let node = NodeStatus { battery_percent: 15, latency_ms: 5, arch: Arch::Arm };
/// let policy = Policy::new(30, 50, &[])?;
/// assert_eq!(
///     policy.check(&node),
///     Err(PolicyViolation::BatteryTooLow { required: 30, found: 15 })
/// );
/// # Ok::<(), CellError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeStatus {
    /// Battery charge, 0 to 100; mains-powered nodes report 100.
    pub battery_percent: u8,
    /// Round-trip latency to the node, in milliseconds.
    pub latency_ms: u32,
    /// The node's CPU architecture.
    pub arch: Arch,
}

/// The rule of a [`Policy`] that a node breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// The node's battery is below the policy's minimum.
    BatteryTooLow {
        /// The policy's minimum.
        required: u8,
        /// The node's battery.
        found: u8,
    },
    /// The node's latency is above the policy's maximum.
    LatencyTooHigh {
        /// The policy's maximum.
        max: u32,
        /// The node's latency.
        found: u32,
    },
}

impl fmt::Display for PolicyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyViolation::BatteryTooLow { required, found } => {
                write!(
                    f,
                    "battery too low: expected at least {required}%, found {found}%"
                )
            }
            PolicyViolation::LatencyTooHigh { max, found } => {
                write!(
                    f,
                    "latency too high: expected at most {max} ms, found {found} ms"
                )
            }
        }
    }
}

/// Where an agent may run.
///
/// Two hard rules ([`Policy::check`]): the node's battery is at least `min_battery_percent` and
/// its latency at most `max_latency_ms`. The architecture list is a preference, not a rule: a
/// WebAssembly agent runs on any of them, so [`Policy::select`] ranks nodes by it but never
/// excludes one for it.
///
/// ```
/// use mielin_cells::{Arch, CellError, NodeStatus, Policy};
///
/// // At least 30% battery, at most 50 ms away; aarch64 preferred, then x86_64.
/// let policy = Policy::new(30, 50, &[Arch::Aarch64, Arch::X86_64])?;
/// // The same, as a struct literal (no need to name the `heapless` vector type).
/// let literal = Policy {
///     min_battery_percent: 30,
///     max_latency_ms: 50,
///     ..Policy::preferring(&[Arch::Aarch64, Arch::X86_64])?
/// };
/// assert_eq!(policy, literal);
///
/// let nodes = [
///     NodeStatus { battery_percent: 90, latency_ms: 20, arch: Arch::X86_64 },
///     NodeStatus { battery_percent: 60, latency_ms: 35, arch: Arch::Aarch64 },
///     NodeStatus { battery_percent: 10, latency_ms: 1, arch: Arch::Aarch64 },
/// ];
/// assert_eq!(policy.select(&nodes), Some(1)); // preferred architecture first
/// assert!(Policy::default().check(&nodes[2]).is_ok()); // the default allows anything
/// # Ok::<(), CellError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Policy {
    /// The lowest battery charge (percent) a node may have. Values above 100 can never be met.
    pub min_battery_percent: u8,
    /// The highest latency (milliseconds) a node may have.
    pub max_latency_ms: u32,
    /// Architectures in order of preference, best first. Empty: no preference.
    pub preferred_architectures: heapless::Vec<Arch, MAX_ARCHITECTURES>,
}

impl Default for Policy {
    /// Anything runs anywhere: no battery minimum, no latency limit, no preference.
    fn default() -> Self {
        Policy {
            min_battery_percent: 0,
            max_latency_ms: u32::MAX,
            preferred_architectures: heapless::Vec::new(),
        }
    }
}

impl Policy {
    /// A policy with these limits and architecture preferences (best first).
    ///
    /// Fails with [`CellError::CapacityExceeded`] if more than [`MAX_ARCHITECTURES`] are given.
    pub fn new(
        min_battery_percent: u8,
        max_latency_ms: u32,
        preferred_architectures: &[Arch],
    ) -> Result<Self, CellError> {
        let preferred_architectures =
            heapless::Vec::from_slice(preferred_architectures).map_err(|_| {
                CellError::CapacityExceeded {
                    what: Capacity::Architectures,
                    capacity: MAX_ARCHITECTURES,
                    requested: preferred_architectures.len(),
                }
            })?;
        Ok(Policy {
            min_battery_percent,
            max_latency_ms,
            preferred_architectures,
        })
    }

    /// The default policy (no battery minimum, no latency limit) with these architecture
    /// preferences, best first: the base for a struct literal that sets the other fields.
    ///
    /// Fails with [`CellError::CapacityExceeded`] if more than [`MAX_ARCHITECTURES`] are given.
    ///
    /// ```
    /// use mielin_cells::{Arch, CellError, Policy};
    ///
    /// let policy = Policy {
    ///     min_battery_percent: 30,
    ///     ..Policy::preferring(&[Arch::Aarch64, Arch::X86_64])?
    /// };
    /// assert_eq!(policy, Policy::new(30, u32::MAX, &[Arch::Aarch64, Arch::X86_64])?);
    /// # Ok::<(), CellError>(())
    /// ```
    pub fn preferring(preferred_architectures: &[Arch]) -> Result<Self, CellError> {
        Policy::new(0, u32::MAX, preferred_architectures)
    }

    /// Whether the policy lets the agent run on a node with low battery (at or below
    /// [`LOW_BATTERY_PERCENT`]), that is whether its minimum is at most that.
    pub fn allows_low_battery(&self) -> bool {
        self.min_battery_percent <= LOW_BATTERY_PERCENT
    }

    /// Checks the hard rules, battery first, and names the first one `node` breaks.
    pub fn check(&self, node: &NodeStatus) -> Result<(), PolicyViolation> {
        if node.battery_percent < self.min_battery_percent {
            return Err(PolicyViolation::BatteryTooLow {
                required: self.min_battery_percent,
                found: node.battery_percent,
            });
        }
        if node.latency_ms > self.max_latency_ms {
            return Err(PolicyViolation::LatencyTooHigh {
                max: self.max_latency_ms,
                found: node.latency_ms,
            });
        }
        Ok(())
    }

    /// The index of the best node that passes [`Policy::check`], or `None` if none does.
    ///
    /// Ranking: an architecture earlier in the preference list first (unlisted ones after all
    /// listed ones), then lower latency, then more battery; remaining ties go to the lowest
    /// index, so the choice is deterministic.
    pub fn select(&self, nodes: &[NodeStatus]) -> Option<usize> {
        nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| self.check(n).is_ok())
            .min_by_key(|&(i, n)| (self.rank(n), i))
            .map(|(i, _)| i)
    }

    /// The ranking of [`Policy::select`], lower first: the architecture's place in the
    /// preference list, then latency, then more battery.
    pub(crate) fn rank(&self, n: &NodeStatus) -> (usize, u32, Reverse<u8>) {
        (
            self.arch_rank(n.arch),
            n.latency_ms,
            Reverse(n.battery_percent),
        )
    }

    fn arch_rank(&self, arch: Arch) -> usize {
        self.preferred_architectures
            .iter()
            .position(|&a| a == arch)
            .unwrap_or(MAX_ARCHITECTURES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(battery_percent: u8, latency_ms: u32, arch: Arch) -> NodeStatus {
        NodeStatus {
            battery_percent,
            latency_ms,
            arch,
        }
    }

    #[test]
    fn default_allows_everything() {
        let p = Policy::default();
        assert!(p.allows_low_battery());
        assert_eq!(p.check(&node(0, u32::MAX, Arch::Xtensa)), Ok(()));
    }

    #[test]
    fn check_names_the_broken_rule() {
        let p = Policy::new(30, 50, &[]).unwrap();
        assert!(!p.allows_low_battery());
        assert_eq!(
            p.check(&node(29, 10, Arch::Arm)),
            Err(PolicyViolation::BatteryTooLow {
                required: 30,
                found: 29
            })
        );
        assert_eq!(
            p.check(&node(30, 51, Arch::Arm)),
            Err(PolicyViolation::LatencyTooHigh { max: 50, found: 51 })
        );
        assert_eq!(p.check(&node(30, 50, Arch::Arm)), Ok(()));
    }

    #[test]
    fn select_ranks_arch_then_latency_then_battery_then_index() {
        let p = Policy::new(20, 100, &[Arch::Aarch64, Arch::X86_64]).unwrap();
        let nodes = [
            node(90, 5, Arch::Arm),      // unlisted arch: last resort
            node(10, 1, Arch::Aarch64),  // breaks battery
            node(50, 40, Arch::X86_64),  // second preference
            node(60, 30, Arch::Aarch64), // first preference, worse latency
            node(70, 20, Arch::Aarch64), // first preference, best latency
            node(80, 20, Arch::Aarch64), // same latency, more battery: winner
            node(80, 20, Arch::Aarch64), // exact tie: lower index wins
        ];
        assert_eq!(p.select(&nodes), Some(5));
        assert_eq!(p.select(&nodes[..5]), Some(4));
        assert_eq!(p.select(&nodes[..3]), Some(2));
        assert_eq!(p.select(&nodes[..2]), Some(0));
        assert_eq!(p.select(&nodes[1..2]), None);
        assert_eq!(p.select(&[]), None);
    }

    #[test]
    fn too_many_architectures_is_an_error() {
        let archs = [Arch::Arm; MAX_ARCHITECTURES + 1];
        assert_eq!(
            Policy::new(0, 0, &archs).unwrap_err(),
            CellError::CapacityExceeded {
                what: Capacity::Architectures,
                capacity: MAX_ARCHITECTURES,
                requested: MAX_ARCHITECTURES + 1
            }
        );
    }

    #[test]
    fn names_round_trip() {
        for tag in 0..=u8::MAX {
            if let Some(a) = Arch::from_tag(tag) {
                assert_eq!(a.name().parse::<Arch>(), Ok(a));
                let mut upper = [0u8; 16];
                let upper = &mut upper[..a.name().len()];
                upper.copy_from_slice(a.name().as_bytes());
                upper.make_ascii_uppercase();
                let upper = core::str::from_utf8(upper).unwrap();
                assert_eq!(upper.parse::<Arch>(), Ok(a));
            }
        }
        assert_eq!("arm64".parse::<Arch>(), Ok(Arch::Aarch64));
        assert_eq!("amd64".parse::<Arch>(), Ok(Arch::X86_64));
        assert_eq!("i686".parse::<Arch>(), Ok(Arch::X86));
        assert_eq!("mips".parse::<Arch>(), Err(ParseArchError));
        assert_eq!("".parse::<Arch>(), Err(ParseArchError));
        assert_eq!("aarch64 ".parse::<Arch>(), Err(ParseArchError));
    }

    #[test]
    fn preferring_is_the_default_with_preferences() {
        let p = Policy::preferring(&[Arch::Riscv32]).unwrap();
        assert_eq!(p.min_battery_percent, Policy::default().min_battery_percent);
        assert_eq!(p.max_latency_ms, Policy::default().max_latency_ms);
        assert_eq!(p.preferred_architectures.as_slice(), &[Arch::Riscv32]);
        assert!(Policy::preferring(&[Arch::Arm; MAX_ARCHITECTURES + 1]).is_err());
    }

    #[test]
    fn tags_round_trip() {
        for tag in 0..=u8::MAX {
            if let Some(a) = Arch::from_tag(tag) {
                assert_eq!(a.tag(), tag);
            }
        }
        assert_eq!(Arch::from_tag(7), None);
    }
}
