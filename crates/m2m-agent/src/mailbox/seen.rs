//! The ids of mail already delivered: a bounded map of (sender, message id) to the time the
//! message expires, pruned as entries expire, optionally kept in a file so that a restarted
//! short-lived agent also drops a message the hub replays after we acked it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's shape: `{"seen":[["<from> <id>", expiresAt], …]}`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    seen: Vec<(String, u64)>,
}

/// Delivered mail ids, at most `capacity`.
#[derive(Debug)]
pub(crate) struct SeenSet {
    entries: HashMap<String, u64>,
    capacity: usize,
    path: Option<PathBuf>,
    dirty: bool,
}

fn key(from: &str, id: &str) -> String {
    format!("{from} {id}")
}

impl SeenSet {
    /// An empty set, or the one kept in `path` (an unreadable file starts empty, with a
    /// warning: at worst a replay of already-acked mail is delivered again).
    pub(crate) fn new(capacity: usize, path: Option<&Path>) -> Self {
        let mut entries = HashMap::new();
        if let Some(path) = path {
            match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice::<File>(&bytes) {
                    Ok(file) => entries.extend(file.seen),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "mailbox state file unreadable; starting empty")
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "mailbox state file unreadable; starting empty")
                }
            }
        }
        SeenSet {
            entries,
            capacity: capacity.max(1),
            path: path.map(Path::to_path_buf),
            dirty: false,
        }
    }

    /// Whether the message `id` from `from` was delivered before.
    pub(crate) fn contains(&self, from: &str, id: &str) -> bool {
        self.entries.contains_key(&key(from, id))
    }

    /// Remembers a delivered message until it expires (`expires_at`, ms); when full, first
    /// forgets what expired by `now_ms`, then what expires soonest.
    pub(crate) fn insert(&mut self, from: &str, id: &str, expires_at: u64, now_ms: u64) {
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, exp| *exp > now_ms);
        }
        while self.entries.len() >= self.capacity {
            let Some(soonest) = self
                .entries
                .iter()
                .min_by_key(|(_, exp)| **exp)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.entries.remove(&soonest);
        }
        self.entries.insert(key(from, id), expires_at);
        self.dirty = true;
    }

    /// How many ids are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Writes the set to its file (if it has one and changed), dropping what expired: a
    /// temporary file renamed over the old one, so a crash leaves one or the other.
    pub(crate) fn persist(&mut self, now_ms: u64) {
        let Some(path) = self.path.clone() else {
            return;
        };
        if !self.dirty {
            return;
        }
        self.entries.retain(|_, exp| *exp > now_ms);
        let file = File {
            seen: self.entries.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        };
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec(&file)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => self.dirty = false,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "writing the mailbox state file failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_pruned_and_kept_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen.json");
        let mut seen = SeenSet::new(2, Some(&path));
        seen.insert("a", "1", 100, 0);
        seen.insert("a", "2", 50, 0);
        assert!(seen.contains("a", "1") && !seen.contains("b", "1"));
        // Full: the one expiring soonest goes.
        seen.insert("a", "3", 200, 0);
        assert_eq!(seen.len(), 2);
        assert!(!seen.contains("a", "2"));
        // Full with an expired entry: it goes first.
        seen.insert("a", "4", 300, 150);
        assert!(!seen.contains("a", "1") && seen.contains("a", "3"));
        seen.persist(0);
        let again = SeenSet::new(2, Some(&path));
        assert!(again.contains("a", "3") && again.contains("a", "4"));
        // Expired entries are not written.
        let mut again = again;
        again.dirty = true;
        again.persist(250);
        assert_eq!(SeenSet::new(2, Some(&path)).len(), 1);
    }

    #[test]
    fn a_corrupt_file_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen.json");
        std::fs::write(&path, b"not json").unwrap();
        assert_eq!(SeenSet::new(4, Some(&path)).len(), 0);
    }
}
