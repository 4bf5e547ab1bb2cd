//! Placement (issue 12; ARCHITECTURE.md, "Nodes on PostgreSQL"): E2B's best-of-two with
//! the image first, and the images a node reports for it.
use chrono::{DateTime, Utc};
use kiln_store::{NodeRecord, NodeStatus};

/// Placement (ARCHITECTURE.md, "Nodes on PostgreSQL"): among `nodes` that take sessions
/// (active, heard from since `fresh_after`, with free room) two are sampled with `pick`
/// (an index below its argument); of the two, one that has `image` (its last heartbeat
/// listed it) wins, then the one with more free sessions, then `me` (no hop). `None`
/// when every node is full, draining or down.
pub fn place<'a>(
    nodes: &'a [NodeRecord],
    me: Option<&str>,
    fresh_after: DateTime<Utc>,
    image: Option<&str>,
    mut pick: impl FnMut(usize) -> usize,
) -> Option<&'a NodeRecord> {
    let open: Vec<&NodeRecord> = nodes
        .iter()
        .filter(|n| {
            n.status == NodeStatus::Active
                && n.last_heartbeat_at >= fresh_after
                && n.free_sessions() > 0
        })
        .collect();
    let first = *open.get(pick(open.len()) % open.len().max(1))?;
    if open.len() == 1 {
        return Some(first);
    }
    // A second, distinct sample: an index among the others.
    let mut second_index = pick(open.len() - 1) % (open.len() - 1);
    let first_index = open.iter().position(|n| n.node_id == first.node_id)?;
    if second_index >= first_index {
        second_index += 1;
    }
    let second = open[second_index];
    let has_image = |n: &NodeRecord| image.is_some_and(|i| n.images.iter().any(|m| m == i));
    let key = |n: &NodeRecord| {
        (
            has_image(n),
            n.free_sessions(),
            Some(n.node_id.as_str()) == me,
        )
    };
    Some(if key(second) > key(first) {
        second
    } else {
        first
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, status: NodeStatus, max: u64, live: u64, beat: DateTime<Utc>) -> NodeRecord {
        NodeRecord {
            node_id: id.into(),
            address: format!("http://{id}"),
            backend: "local".into(),
            version: "0".into(),
            status,
            max_sessions: max,
            memory_mib: 0,
            disk_mib: 0,
            live_sessions: live,
            registered_at: beat,
            last_heartbeat_at: beat,
            down_at: None,
            images: Vec::new(),
            stats: Default::default(),
        }
    }

    #[test]
    fn placement_takes_the_roomier_of_two_and_skips_what_takes_nothing() {
        let now = Utc::now();
        let stale = now - chrono::Duration::seconds(60);
        let fresh = now - chrono::Duration::seconds(10);
        let nodes = vec![
            node("a", NodeStatus::Active, 10, 9, now),
            node("b", NodeStatus::Active, 10, 2, now),
            node("c", NodeStatus::Draining, 10, 0, now),
            node("d", NodeStatus::Down, 10, 0, now),
            node("e", NodeStatus::Active, 10, 0, stale),
            node("f", NodeStatus::Active, 4, 4, now),
        ];
        // Every pair of samples among the open nodes (a, b): b has more room.
        for first in 0..2 {
            let mut picks = vec![first, 0].into_iter();
            let chosen = place(&nodes, None, fresh, None, |_| picks.next().unwrap_or(0));
            assert_eq!(chosen.map(|n| n.node_id.as_str()), Some("b"));
        }
        // A tie goes to this node.
        let tied = vec![
            node("a", NodeStatus::Active, 10, 5, now),
            node("b", NodeStatus::Active, 10, 5, now),
        ];
        for first in 0..2 {
            let mut picks = vec![first, 0].into_iter();
            let chosen = place(&tied, Some("b"), fresh, None, |_| picks.next().unwrap_or(0));
            assert_eq!(chosen.map(|n| n.node_id.as_str()), Some("b"));
        }
        // Nothing open: full, draining, down or silent.
        assert!(place(&nodes[2..], None, fresh, None, |_| 0).is_none());
        assert!(place(&[], None, fresh, None, |_| 0).is_none());
    }

    #[test]
    fn placement_prefers_a_sampled_node_that_has_the_image_then_room() {
        let now = Utc::now();
        let fresh = now - chrono::Duration::seconds(10);
        let with = |mut n: NodeRecord, images: &[&str]| {
            n.images = images.iter().map(|i| i.to_string()).collect();
            n
        };
        let nodes = vec![
            with(node("a", NodeStatus::Active, 10, 8, now), &["img"]),
            node("b", NodeStatus::Active, 10, 0, now),
            with(node("c", NodeStatus::Active, 10, 5, now), &["other", "img"]),
            with(node("d", NodeStatus::Draining, 10, 0, now), &["img"]),
        ];
        let pair = |first: usize, second: usize, image: Option<&str>, me: Option<&str>| {
            let mut picks = vec![first, second].into_iter();
            place(&nodes, me, fresh, image, |_| picks.next().unwrap_or(0))
                .map(|n| n.node_id.clone())
        };
        // Open: a, b, c. The image beats room: a (2 free) over b (10 free), even from b.
        assert_eq!(pair(0, 0, Some("img"), Some("b")).as_deref(), Some("a"));
        assert_eq!(pair(1, 0, Some("img"), Some("b")).as_deref(), Some("a"));
        // Both have it: room decides (c).
        assert_eq!(pair(0, 1, Some("img"), None).as_deref(), Some("c"));
        // Neither of the two sampled has it: room, as without an image.
        assert_eq!(pair(1, 1, Some("nowhere"), None).as_deref(), Some("b"));
        assert_eq!(pair(0, 0, None, None).as_deref(), Some("b"));
        // Only two samples: a node with the image outside the pair does not win.
        assert_eq!(pair(1, 0, Some("other"), None).as_deref(), Some("b"));
        // A draining node with the image takes nothing.
        let only_draining = vec![nodes[3].clone()];
        assert!(place(&only_draining, None, fresh, Some("img"), |_| 0).is_none());
    }
}
