//! Consistent hashing: a ketama-style ring with points in proportion to weight.
//!
//! Each server gets `160 × weight` points on a 32-bit ring, taken from
//! SHA-256 of `"<host:port>-<n>"`; a key belongs to the first point at or
//! after the key's own hash (wrapping around). Points depend only on a
//! server's address and weight, never on its position in the list, so every
//! app server that lists the same servers, in any order, places keys alike.
//! Adding a server takes over only the arcs its new points cover — about
//! `weight / total weight` of the keys — and moves nothing between the
//! servers that were already there.

use sha2::{Digest, Sha256};

use crate::servers::Server;

/// Ring points per unit of weight (ketama's classic 160).
const POINTS_PER_WEIGHT: u32 = 160;

/// The ring: sorted `(point, server index)` pairs.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    points: Box<[(u32, u32)]>,
}

impl Ring {
    /// Builds the ring of `servers` (at least one).
    pub(crate) fn new(servers: &[Server]) -> Ring {
        let addrs: Vec<String> = servers.iter().map(Server::addr).collect();
        let mut points = Vec::new();
        for (index, server) in servers.iter().enumerate() {
            // Each digest yields 4 points, as ketama's MD5 did.
            for n in 0..server.weight() * POINTS_PER_WEIGHT / 4 {
                let digest = Sha256::digest(format!("{}-{n}", addrs[index]).as_bytes());
                for chunk in digest.chunks_exact(4).take(4) {
                    let point = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    points.push((point, index as u32));
                }
            }
        }
        // Ties (two servers on one point) go to the smaller address, so the
        // order of the server list never matters.
        points.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| addrs[a.1 as usize].cmp(&addrs[b.1 as usize]))
        });
        Ring {
            points: points.into_boxed_slice(),
        }
    }

    /// The index of the server that holds keys hashing to `point`.
    pub(crate) fn locate(&self, point: u32) -> usize {
        let i = self.points.partition_point(|p| p.0 < point);
        let i = if i == self.points.len() { 0 } else { i };
        self.points[i].1 as usize
    }
}

/// The ring position of a key's session part.
pub(crate) fn key_point(part: &str) -> u32 {
    let digest = Sha256::digest(part.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servers::ServerList;
    use sessionkit_core::SessionId;

    fn ring(spec: &str) -> (Ring, Vec<String>) {
        let list = ServerList::parse(spec).unwrap();
        (
            Ring::new(list.as_slice()),
            list.iter().map(Server::addr).collect(),
        )
    }

    fn placements(spec: &str, keys: &[String]) -> Vec<String> {
        let (ring, addrs) = ring(spec);
        keys.iter()
            .map(|k| addrs[ring.locate(key_point(k))].clone())
            .collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|_| SessionId::generate().expose()).collect()
    }

    #[test]
    fn adding_a_fourth_server_moves_about_a_quarter_of_the_keys() {
        let keys = keys(20_000);
        let before = placements("10.0.0.1:11211,10.0.0.2:11211,10.0.0.3:11211", &keys);
        let after = placements(
            "10.0.0.1:11211,10.0.0.2:11211,10.0.0.3:11211,10.0.0.4:11211",
            &keys,
        );
        let moved: Vec<usize> = (0..keys.len()).filter(|&i| before[i] != after[i]).collect();
        let share = moved.len() as f64 / keys.len() as f64;
        assert!(
            (0.17..=0.33).contains(&share),
            "adding 1 server to 3 must move about 1/4 of the keys, moved {share:.3}"
        );
        assert!(
            moved.iter().all(|&i| after[i] == "10.0.0.4:11211"),
            "keys may only move to the new server"
        );
    }

    #[test]
    fn removing_a_server_moves_only_its_keys() {
        let keys = keys(10_000);
        let before = placements("a:1,b:1,c:1", &keys);
        let after = placements("a:1,c:1", &keys);
        for i in 0..keys.len() {
            if before[i] != "b:1" {
                assert_eq!(before[i], after[i], "a key not on the removed server moved");
            }
        }
    }

    #[test]
    fn shares_follow_the_weights() {
        let keys = keys(30_000);
        let placed = placements("a:1:1,b:1:2,c:1:3", &keys);
        for (addr, expected) in [("a:1", 1.0 / 6.0), ("b:1", 2.0 / 6.0), ("c:1", 3.0 / 6.0)] {
            let share = placed.iter().filter(|p| *p == addr).count() as f64 / keys.len() as f64;
            assert!(
                (share - expected).abs() < 0.06,
                "{addr}: share {share:.3}, expected about {expected:.3}"
            );
        }
    }

    #[test]
    fn list_order_does_not_matter() {
        let keys = keys(2_000);
        assert_eq!(
            placements("a:1,b:1:3,c:1", &keys),
            placements("c:1,a:1,b:1:3", &keys)
        );
    }

    #[test]
    fn one_server_takes_everything_and_wraps() {
        let (one, _) = ring("a:1");
        assert_eq!(one.locate(0), 0);
        assert_eq!(one.locate(u32::MAX), 0);
        let (two, _) = ring("a:1,b:1");
        let last = two.points.last().unwrap();
        let first = two.points[0];
        if last.0 < u32::MAX {
            assert_eq!(two.locate(last.0 + 1), first.1 as usize);
        }
    }
}
