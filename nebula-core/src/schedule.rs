//! Scheduler math, exactly as the original: how many containers, their names and host ports.

use crate::model::{ContainersPer, StartingPort};

/// Most containers the planner places for one app on one host, whatever the rule says.
pub const MAX_CONTAINERS: u32 = 4096;

/// What a host offers, read from its engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostResources {
    /// Logical CPUs.
    pub cpus: u32,
    /// Total memory in MiB.
    pub memory_mb: u64,
}

/// The number of containers of an app on a host: `int(cpus * n)`, `int(memory_mb / n)` or
/// `n`, truncated as the original did, and capped at [`MAX_CONTAINERS`].
#[must_use]
pub fn container_count(rule: ContainersPer, host: HostResources) -> u32 {
    let n = match rule {
        ContainersPer::Cpu(per) => f64::from(host.cpus) * per,
        #[allow(clippy::cast_precision_loss)]
        ContainersPer::Memory(mb) | ContainersPer::Mem(mb) => host.memory_mb as f64 / mb,
        ContainersPer::Server(n) | ContainersPer::Instance(n) => f64::from(n),
    };
    if !n.is_finite() || n < 1.0 {
        return 0;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = n.min(f64::from(MAX_CONTAINERS)) as u32;
    n
}

/// The container name of slot `index` (1-based): `<app>-<index>`.
#[must_use]
pub fn container_name(app: &str, index: u32) -> String {
    format!("{app}-{index}")
}

/// The slot of a container name of `app`, if it is `<app>-<index>` with index >= 1.
#[must_use]
pub fn slot_of(app: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(app)?.strip_prefix('-')?;
    if rest.starts_with('0') || rest.starts_with('+') {
        return None;
    }
    rest.parse().ok().filter(|i| *i >= 1)
}

/// One host-to-container port binding.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct PortBinding {
    /// The host port.
    pub host: u16,
    /// The container port (TCP).
    pub container: u16,
}

/// The port bindings of slot `index` (1-based): host port = start + index - 1 for every entry.
/// `None` when a host port would pass 65535.
#[must_use]
pub fn port_bindings(ports: &[StartingPort], index: u32) -> Option<Vec<PortBinding>> {
    ports
        .iter()
        .map(|p| {
            let host = u32::from(p.host()).checked_add(index.checked_sub(1)?)?;
            Some(PortBinding {
                host: u16::try_from(host).ok()?,
                container: p.container(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FOUR: HostResources = HostResources {
        cpus: 4,
        memory_mb: 8192,
    };

    #[test]
    fn reference_examples() {
        assert_eq!(container_count(ContainersPer::Cpu(3.0), FOUR), 12);
        assert_eq!(container_count(ContainersPer::Cpu(0.1), FOUR), 0);
        assert_eq!(
            container_count(
                ContainersPer::Cpu(0.5),
                HostResources {
                    cpus: 3,
                    memory_mb: 1
                }
            ),
            1
        );
        assert_eq!(container_count(ContainersPer::Memory(3000.0), FOUR), 2);
        assert_eq!(container_count(ContainersPer::Server(2), FOUR), 2);
        let ports = [StartingPort::Mapped {
            host: 81,
            container: 80,
        }];
        let hosts: Vec<u16> = (1..=12)
            .map(|i| port_bindings(&ports, i).unwrap()[0].host)
            .collect();
        assert_eq!(hosts, (81..=92).collect::<Vec<_>>());
        let mixed = [
            StartingPort::Same(80),
            StartingPort::Mapped {
                host: 8443,
                container: 443,
            },
        ];
        assert_eq!(
            port_bindings(&mixed, 2).unwrap(),
            vec![
                PortBinding {
                    host: 81,
                    container: 80
                },
                PortBinding {
                    host: 8444,
                    container: 443
                }
            ]
        );
    }

    #[test]
    fn names_and_slots() {
        assert_eq!(container_name("site", 10), "site-10");
        assert_eq!(slot_of("site", "site-10"), Some(10));
        assert_eq!(slot_of("site", "site-0"), None);
        assert_eq!(slot_of("site", "site-01"), None);
        assert_eq!(slot_of("site", "site-x-1"), None);
        assert_eq!(slot_of("site", "sites-1"), None);
    }

    #[test]
    fn overflowing_port_is_none() {
        assert_eq!(port_bindings(&[StartingPort::Same(65535)], 2), None);
        assert!(port_bindings(&[StartingPort::Same(65535)], 1).is_some());
    }

    proptest! {
        #[test]
        fn cpu_count_truncates(cpus in 1u32..256, per in 0.01f64..64.0) {
            let n = container_count(ContainersPer::Cpu(per), HostResources { cpus, memory_mb: 1 });
            let exact = f64::from(cpus) * per;
            prop_assert!(f64::from(n) <= exact.min(f64::from(MAX_CONTAINERS)));
            prop_assert!(f64::from(n) > exact.min(f64::from(MAX_CONTAINERS)) - 1.0);
        }

        #[test]
        fn memory_count_truncates(mem in 1u64..1_000_000, per in 1.0f64..100_000.0) {
            let n = container_count(ContainersPer::Mem(per), HostResources { cpus: 1, memory_mb: mem });
            #[allow(clippy::cast_precision_loss)]
            let exact = (mem as f64 / per).min(f64::from(MAX_CONTAINERS));
            prop_assert!(f64::from(n) <= exact && f64::from(n) > exact - 1.0);
        }

        #[test]
        fn slot_round_trips(i in 1u32..100_000) {
            prop_assert_eq!(slot_of("a-b", &container_name("a-b", i)), Some(i));
        }

        #[test]
        fn ports_follow_the_formula(start in 1u16..=65535, container in 1u16..=65535, i in 1u32..5000) {
            let got = port_bindings(&[StartingPort::Mapped { host: start, container }], i);
            let want = u32::from(start) + i - 1;
            if want <= 65535 {
                let b = got.unwrap()[0];
                prop_assert_eq!(u32::from(b.host), want);
                prop_assert_eq!(b.container, container);
            } else {
                prop_assert!(got.is_none());
            }
        }
    }
}
