//! The processes visible in `/proc`, with their parents and process groups: enough to
//! tell which processes an exec left behind.

use std::collections::{HashMap, HashSet};
use std::fs;

/// One process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Parent pid.
    pub ppid: i32,
    /// Process group.
    pub pgid: i32,
    /// Exited, waiting to be reaped: cannot be signalled, only collected.
    pub zombie: bool,
}

/// A process an exec left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Leftover {
    /// Its pid.
    pub pid: i32,
    /// Already exited: only to be collected.
    pub zombie: bool,
}

/// A snapshot of every process (thread-group leader) in `/proc`.
#[derive(Debug, Default)]
pub struct ProcessTable {
    processes: HashMap<i32, ProcessInfo>,
}

impl ProcessTable {
    /// Reads `/proc`; processes that exit while it is read are simply missing.
    pub fn scan() -> Self {
        let mut processes = HashMap::new();
        let Ok(entries) = fs::read_dir("/proc") else {
            return ProcessTable { processes };
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(info) = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
            {
                processes.insert(pid, info);
            }
        }
        ProcessTable { processes }
    }

    #[cfg(test)]
    fn from_entries(entries: &[(i32, ProcessInfo)]) -> Self {
        ProcessTable {
            processes: entries.iter().copied().collect(),
        }
    }

    /// Whether `pid` has `ancestor` among its ancestors (strictly).
    pub fn descends_from(&self, pid: i32, ancestor: i32) -> bool {
        let mut current = pid;
        // A bound on the walk: ppid chains cannot loop, but a snapshot taken while
        // processes exit and pids are reused could, in theory.
        for _ in 0..self.processes.len() + 1 {
            match self.processes.get(&current) {
                Some(info) if info.ppid == ancestor => return true,
                Some(info) if info.ppid > 0 && info.ppid != current => current = info.ppid,
                _ => return false,
            }
        }
        false
    }

    /// Processes below `root` that belong to no protected exec: not in one of the
    /// `protected` process groups, and not below a process whose pid is one of them (an
    /// exec's first process leads its group, so its pid is the group id). Zombies
    /// included: they hold a pid until collected.
    pub fn leftovers(&self, root: i32, protected: &HashSet<i32>) -> Vec<Leftover> {
        let mut found = Vec::new();
        for (&pid, info) in &self.processes {
            if pid == root || protected.contains(&info.pgid) {
                continue;
            }
            if !self.descends_from(pid, root) {
                continue;
            }
            if protected
                .iter()
                .any(|&leader| pid == leader || self.descends_from(pid, leader))
            {
                continue;
            }
            found.push(Leftover {
                pid,
                zombie: info.zombie,
            });
        }
        found
    }

    /// Pids other than `root`, zombies included (they still hold a pid).
    pub fn others_than(&self, root: i32) -> usize {
        self.processes.keys().filter(|&&pid| pid != root).count()
    }
}

/// `pid (comm) S ppid pgrp …`; comm may contain anything, so fields are read after the
/// last `)`.
fn parse_stat(stat: &str) -> Option<ProcessInfo> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some(ProcessInfo {
        ppid,
        pgid,
        zombie: state == "Z" || state == "X",
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn live(ppid: i32, pgid: i32) -> ProcessInfo {
        ProcessInfo {
            ppid,
            pgid,
            zombie: false,
        }
    }

    #[test]
    fn parses_stat_with_odd_command_names() {
        let info = parse_stat("42 (a) b (c)) S 7 42 42 0 -1 4194560").unwrap();
        assert_eq!(info, live(7, 42));
        assert!(parse_stat("1 (x) Z 0 1 1").unwrap().zombie);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn leftovers_spare_running_execs_and_their_groups() {
        // 1 = agent; 10 = a running exec (group 10) with child 11 and grandchild 12
        // (12 left the group with setsid); 13 is in group 10 but was re-parented to the
        // agent; 20 = a finished exec's survivor, 21 its child in a new session; 30 a
        // zombie; 99 is not below the agent at all.
        let table = ProcessTable::from_entries(&[
            (1, live(0, 1)),
            (10, live(1, 10)),
            (11, live(10, 10)),
            (12, live(11, 12)),
            (13, live(1, 10)),
            (20, live(1, 20)),
            (21, live(20, 21)),
            (
                30,
                ProcessInfo {
                    ppid: 1,
                    pgid: 30,
                    zombie: true,
                },
            ),
            (99, live(0, 99)),
        ]);
        let pids = |protected: HashSet<i32>| {
            let mut left: Vec<(i32, bool)> = table
                .leftovers(1, &protected)
                .into_iter()
                .map(|l| (l.pid, l.zombie))
                .collect();
            left.sort_unstable();
            left
        };
        assert_eq!(
            pids(HashSet::from([10])),
            [(20, false), (21, false), (30, true)]
        );
        let all: Vec<i32> = pids(HashSet::new()).into_iter().map(|(p, _)| p).collect();
        assert_eq!(all, [10, 11, 12, 13, 20, 21, 30]);
        assert!(table.descends_from(12, 1));
        assert!(!table.descends_from(99, 1));
        assert_eq!(table.others_than(1), 8);
    }
}
