//! Where a rank learns its place in the world, as the field does it: torchrun's variables
//! (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`),
//! else Slurm's (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, the tasks of this node
//! from `SLURM_STEP_TASKS_PER_NODE` / `SLURM_TASKS_PER_NODE` and `SLURM_NODEID`, the first
//! host of `SLURM_JOB_NODELIST` as the master unless `MASTER_ADDR` is set, and a port
//! derived from `SLURM_JOB_ID` unless `MASTER_PORT` is set). Nothing set: a world of one.
//! This is the one place that reads these variables; the launcher and Slurm job submission
//! write them.

use std::time::Duration;

use crate::error::{Error, Result};

/// PyTorch's default timeout of a rendezvous and of each collective: 30 minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// torchrun's variables, which the launcher sets for each rank.
pub mod torchrun {
    pub const RANK: &str = "RANK";
    pub const WORLD_SIZE: &str = "WORLD_SIZE";
    pub const LOCAL_RANK: &str = "LOCAL_RANK";
    pub const LOCAL_WORLD_SIZE: &str = "LOCAL_WORLD_SIZE";
    pub const MASTER_ADDR: &str = "MASTER_ADDR";
    pub const MASTER_PORT: &str = "MASTER_PORT";
}

/// Slurm's variables (set by `srun` for each task).
pub mod slurm {
    pub const PROCID: &str = "SLURM_PROCID";
    pub const NTASKS: &str = "SLURM_NTASKS";
    pub const LOCALID: &str = "SLURM_LOCALID";
    pub const NODEID: &str = "SLURM_NODEID";
    pub const STEP_TASKS_PER_NODE: &str = "SLURM_STEP_TASKS_PER_NODE";
    pub const TASKS_PER_NODE: &str = "SLURM_TASKS_PER_NODE";
    pub const JOB_NODELIST: &str = "SLURM_JOB_NODELIST";
    pub const JOB_ID: &str = "SLURM_JOB_ID";
}

/// The rendezvous port of a Slurm job without `MASTER_PORT`: `PORT_BASE + job id % PORT_SPAN`,
/// below Linux's ephemeral range, so that every task of a job computes the same port and
/// concurrent jobs on one node rarely collide.
pub const SLURM_PORT_BASE: u16 = 10_000;
pub const SLURM_PORT_SPAN: u64 = 20_000;

/// Which variables described the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// None were set: one process.
    Single,
    Torchrun,
    Slurm,
}

/// One rank's place and where the group meets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub local_world_size: usize,
    /// Host of the TCPStore that rank 0 serves.
    pub master_addr: String,
    pub master_port: u16,
    /// Bound on joining and on every collective.
    pub timeout: Duration,
    pub source: Source,
}

impl Rendezvous {
    /// A world of one.
    pub fn single() -> Self {
        Rendezvous {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
            master_addr: "127.0.0.1".to_owned(),
            master_port: 0,
            timeout: DEFAULT_TIMEOUT,
            source: Source::Single,
        }
    }

    /// From this process's environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From variables looked up by `get`: torchrun's when `RANK` and `WORLD_SIZE` are set,
    /// else Slurm's when `SLURM_PROCID` and `SLURM_NTASKS` are, else a world of one.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        if get(torchrun::RANK).is_some() && get(torchrun::WORLD_SIZE).is_some() {
            from_torchrun(&get)
        } else if get(slurm::PROCID).is_some() && get(slurm::NTASKS).is_some() {
            from_slurm(&get)
        } else {
            Ok(Rendezvous::single())
        }
    }

    /// With another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether the store is on this machine's loopback (all ranks are local).
    pub fn is_loopback(&self) -> bool {
        self.master_addr == "localhost"
            || self
                .master_addr
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

fn from_torchrun(get: &impl Fn(&str) -> Option<String>) -> Result<Rendezvous> {
    let rank = number(get, torchrun::RANK)?;
    let world_size = number(get, torchrun::WORLD_SIZE)?;
    let local_rank = optional_number(get, torchrun::LOCAL_RANK)?.unwrap_or(rank);
    let local_world_size = optional_number(get, torchrun::LOCAL_WORLD_SIZE)?.unwrap_or(world_size);
    let master_addr = get(torchrun::MASTER_ADDR).unwrap_or_else(|| "127.0.0.1".to_owned());
    let master_port = match get(torchrun::MASTER_PORT) {
        Some(_) => port(get, torchrun::MASTER_PORT)?,
        None if world_size == 1 => 0,
        None => {
            return Err(Error::Variables(format!(
                "{} is {world_size} but {} is not set",
                torchrun::WORLD_SIZE,
                torchrun::MASTER_PORT
            )));
        }
    };
    checked(Rendezvous {
        rank,
        world_size,
        local_rank,
        local_world_size,
        master_addr,
        master_port,
        timeout: DEFAULT_TIMEOUT,
        source: Source::Torchrun,
    })
}

fn from_slurm(get: &impl Fn(&str) -> Option<String>) -> Result<Rendezvous> {
    let rank = number(get, slurm::PROCID)?;
    let world_size = number(get, slurm::NTASKS)?;
    let local_rank = optional_number(get, slurm::LOCALID)?.unwrap_or(0);
    let node = optional_number(get, slurm::NODEID)?.unwrap_or(0);
    let local_world_size =
        match get(slurm::STEP_TASKS_PER_NODE).or_else(|| get(slurm::TASKS_PER_NODE)) {
            Some(list) => {
                let counts = tasks_per_node(&list)?;
                *counts.get(node).ok_or_else(|| {
                    Error::Variables(format!(
                        "{} is {node} but the tasks per node {list:?} list {} node(s)",
                        slurm::NODEID,
                        counts.len()
                    ))
                })?
            }
            None => 1,
        };
    let master_addr = match get(torchrun::MASTER_ADDR) {
        Some(addr) => addr,
        None => match get(slurm::JOB_NODELIST) {
            Some(list) => first_host(&list)?,
            None if world_size == 1 => "127.0.0.1".to_owned(),
            None => {
                return Err(Error::Variables(format!(
                    "{} is {world_size} but neither {} nor {} is set",
                    slurm::NTASKS,
                    torchrun::MASTER_ADDR,
                    slurm::JOB_NODELIST
                )));
            }
        },
    };
    let master_port = match get(torchrun::MASTER_PORT) {
        Some(_) => port(get, torchrun::MASTER_PORT)?,
        None => match get(slurm::JOB_ID) {
            Some(_) => job_port(number(get, slurm::JOB_ID)? as u64),
            None if world_size == 1 => 0,
            None => {
                return Err(Error::Variables(format!(
                    "{} is {world_size} but neither {} nor {} is set",
                    slurm::NTASKS,
                    torchrun::MASTER_PORT,
                    slurm::JOB_ID
                )));
            }
        },
    };
    checked(Rendezvous {
        rank,
        world_size,
        local_rank,
        local_world_size,
        master_addr,
        master_port,
        timeout: DEFAULT_TIMEOUT,
        source: Source::Slurm,
    })
}

/// The rendezvous port of Slurm job `job_id` (see [`SLURM_PORT_BASE`]).
pub fn job_port(job_id: u64) -> u16 {
    SLURM_PORT_BASE + (job_id % SLURM_PORT_SPAN) as u16
}

fn checked(r: Rendezvous) -> Result<Rendezvous> {
    if r.world_size == 0 {
        return Err(Error::Variables("the world size is 0".into()));
    }
    if r.rank >= r.world_size {
        return Err(Error::Variables(format!(
            "rank {} is not below the world size {}",
            r.rank, r.world_size
        )));
    }
    if r.local_world_size == 0 || r.local_rank >= r.local_world_size {
        return Err(Error::Variables(format!(
            "local rank {} is not below the local world size {}",
            r.local_rank, r.local_world_size
        )));
    }
    Ok(r)
}

fn number(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<usize> {
    optional_number(get, name)?.ok_or_else(|| Error::Variables(format!("{name} is not set")))
}

fn optional_number(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<usize>> {
    get(name)
        .map(|v| {
            v.trim().parse::<usize>().map_err(|_| {
                Error::Variables(format!("{name}={v:?} is not a non-negative integer"))
            })
        })
        .transpose()
}

fn port(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<u16> {
    let value = get(name).unwrap_or_default();
    match value.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Error::Variables(format!(
            "{name}={value:?} is not a TCP port"
        ))),
    }
}

/// The first host of a Slurm hostlist (`node[01-04,07],gpu5` -> `node01`).
pub fn first_host(list: &str) -> Result<String> {
    expand_hostlist(list)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Variables(format!("{}={list:?} names no host", slurm::JOB_NODELIST)))
}

/// Every host of a Slurm hostlist, in order: comma-separated names, each with any number of
/// bracketed sets of numbers and zero-padded ranges (`rack[1-2]-n[08-09]`).
pub fn expand_hostlist(list: &str) -> Result<Vec<String>> {
    let bad = |why: &str| Error::Variables(format!("hostlist {list:?}: {why}"));
    let mut hosts = Vec::new();
    for name in split_outside_brackets(list.trim()).map_err(&bad)? {
        if name.is_empty() {
            return Err(bad("empty host name"));
        }
        let mut expanded = vec![String::new()];
        let mut rest = name;
        while !rest.is_empty() {
            let (literal, after) = match rest.find('[') {
                Some(open) => (&rest[..open], Some(&rest[open + 1..])),
                None => (rest, None),
            };
            expanded.iter_mut().for_each(|h| h.push_str(literal));
            let Some(after) = after else { break };
            let close = after.find(']').ok_or_else(|| bad("unclosed '['"))?;
            let choices = bracket_choices(&after[..close]).map_err(|e| bad(&e))?;
            expanded = expanded
                .iter()
                .flat_map(|h| choices.iter().map(move |c| format!("{h}{c}")))
                .collect();
            rest = &after[close + 1..];
        }
        hosts.extend(expanded);
    }
    Ok(hosts)
}

/// Splits at commas outside brackets.
fn split_outside_brackets(list: &str) -> Result<Vec<&str>, &'static str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced brackets");
        }
    }
    parts.push(&list[start..]);
    Ok(parts)
}

/// `01-04,07` -> `01 02 03 04 07` (the width of a range's first bound is kept).
fn bracket_choices(set: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in set.split(',') {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{item:?} is not a number or range"))
        };
        let (start, end) = (parse(lo)?, parse(hi)?);
        if end < start {
            return Err(format!("range {item:?} runs backwards"));
        }
        out.extend((start..=end).map(|n| format!("{n:0width$}", width = lo.len())));
    }
    Ok(out)
}

/// Slurm's tasks per node, `2(x3),1` -> `[2, 2, 2, 1]`.
pub fn tasks_per_node(list: &str) -> Result<Vec<usize>> {
    let bad = || Error::Variables(format!("tasks per node {list:?}: expected e.g. 2(x3),1"));
    let mut counts = Vec::new();
    for item in list.split(',') {
        let (count, repeat) = match item.split_once("(x") {
            Some((count, repeat)) => (
                count,
                repeat
                    .strip_suffix(')')
                    .ok_or_else(bad)?
                    .parse::<usize>()
                    .map_err(|_| bad())?,
            ),
            None => (item, 1),
        };
        let count = count.trim().parse::<usize>().map_err(|_| bad())?;
        counts.extend(std::iter::repeat_n(count, repeat));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn nothing_set_is_a_world_of_one() {
        let r = Rendezvous::from_vars(vars(&[])).unwrap();
        assert_eq!((r.rank, r.world_size, r.source), (0, 1, Source::Single));
    }

    #[test]
    fn reads_torchrun_variables() {
        let r = Rendezvous::from_vars(vars(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "10.0.0.5"),
            ("MASTER_PORT", "29500"),
            // torchrun's variables win over Slurm's.
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ]))
        .unwrap();
        assert_eq!(
            r,
            Rendezvous {
                rank: 3,
                world_size: 8,
                local_rank: 1,
                local_world_size: 2,
                master_addr: "10.0.0.5".into(),
                master_port: 29500,
                timeout: DEFAULT_TIMEOUT,
                source: Source::Torchrun,
            }
        );
        assert!(!r.is_loopback());
    }

    #[test]
    fn rejects_bad_torchrun_variables() {
        let err =
            |pairs: &[(&str, &str)]| Rendezvous::from_vars(vars(pairs)).unwrap_err().to_string();
        assert!(
            err(&[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")]).contains("rank 2")
        );
        assert!(err(&[("RANK", "0"), ("WORLD_SIZE", "2")]).contains("MASTER_PORT is not set"));
        assert!(err(&[("RANK", "x"), ("WORLD_SIZE", "2")]).contains("RANK=\"x\""));
        assert!(
            err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "70000")])
                .contains("TCP port")
        );
    }

    #[test]
    fn reads_slurm_variables() {
        let r = Rendezvous::from_vars(vars(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "7"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_NODEID", "3"),
            ("SLURM_TASKS_PER_NODE", "2(x3),1"),
            ("SLURM_JOB_NODELIST", "gpu[08-10,12]"),
            ("SLURM_JOB_ID", "123456"),
        ]))
        .unwrap();
        assert_eq!((r.rank, r.world_size, r.local_rank), (5, 7, 0));
        assert_eq!(r.local_world_size, 1);
        assert_eq!(r.master_addr, "gpu08");
        assert_eq!(r.master_port, 10_000 + (123_456 % 20_000) as u16);
        assert_eq!(r.source, Source::Slurm);
        let with_port = Rendezvous::from_vars(vars(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_NODELIST", "a1,b2"),
            ("SLURM_JOB_ID", "9"),
            ("MASTER_PORT", "4242"),
            ("MASTER_ADDR", "127.0.0.1"),
        ]))
        .unwrap();
        assert_eq!(
            (with_port.master_addr.as_str(), with_port.master_port),
            ("127.0.0.1", 4242)
        );
        assert!(with_port.is_loopback());
    }

    #[test]
    fn slurm_without_a_master_is_an_error() {
        let e = Rendezvous::from_vars(vars(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SLURM_JOB_NODELIST"), "{e}");
    }

    #[test]
    fn expands_hostlists() {
        assert_eq!(
            expand_hostlist("node[01-04,07]").unwrap(),
            ["node01", "node02", "node03", "node04", "node07"]
        );
        assert_eq!(
            expand_hostlist("a1,rack[1-2]-n[8-9],c").unwrap(),
            ["a1", "rack1-n8", "rack1-n9", "rack2-n8", "rack2-n9", "c"]
        );
        assert_eq!(expand_hostlist("n[098-101]").unwrap()[3], "n101");
        assert_eq!(first_host("node[01-04,07],gpu5").unwrap(), "node01");
        assert_eq!(first_host("login").unwrap(), "login");
        for bad in ["node[01-", "node[x]", "node[4-2]", "a,,b", "a]b["] {
            assert!(expand_hostlist(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_tasks_per_node() {
        assert_eq!(tasks_per_node("2(x3),1").unwrap(), [2, 2, 2, 1]);
        assert_eq!(tasks_per_node("4").unwrap(), [4]);
        assert!(tasks_per_node("2(x").is_err());
    }
}
