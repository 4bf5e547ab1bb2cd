//! The images this node started sandboxes from lately: what its heartbeat reports to
//! placement (`crate::cluster::place`).
use std::collections::VecDeque;
use std::sync::Mutex;

use kiln_store::MAX_NODE_IMAGES;

/// The image references this node started sandboxes from lately, newest first, distinct,
/// at most [`MAX_NODE_IMAGES`]: what its heartbeat reports. A node that started a
/// sandbox from an image has it unpacked (layers, engine image) and starts the next one
/// faster.
#[derive(Default)]
pub struct RecentImages {
    list: Mutex<VecDeque<String>>,
}

impl RecentImages {
    pub fn note(&self, reference: &str) {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        if list.front().is_some_and(|r| r == reference) {
            return;
        }
        list.retain(|r| r != reference);
        list.push_front(reference.to_string());
        list.truncate(MAX_NODE_IMAGES);
    }

    pub fn list(&self) -> Vec<String> {
        let list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_images_are_newest_first_distinct_and_bounded() {
        let recent = RecentImages::default();
        for i in 0..40 {
            recent.note(&format!("img-{i}"));
        }
        recent.note("img-5");
        let list = recent.list();
        assert_eq!(list.len(), MAX_NODE_IMAGES);
        assert_eq!(list[0], "img-5");
        assert_eq!(list[1], "img-39");
        assert_eq!(list.iter().filter(|i| *i == "img-5").count(), 1);
    }
}
