//! One run over several processes: timely's cluster mode (`ucoder-flow run X.toml --processes P
//! --process I --hostfile hosts.txt`, docs/ARCHITECTURE.md, "Several processes").
//!
//! Every process runs the same command with its own `--process` index. Each has its own model
//! backend (engine or server connection) and sandbox pool, and `-w` timely workers; the graph
//! routes every problem by id, so the P × w workers share the problems and exchange records
//! over TCP. All processes read and write one shared run folder: checkpoint parts are named by
//! the (global) worker that committed them, so they never clash, and every process answers a
//! request from any process's committed parts when the run resumes.
//!
//! Process 0 is the *leader*: it claims the run folder, gathers every worker's results after each
//! iteration ([`super::gather`]) and alone writes the result tables, the SFT shards, the
//! summaries and the manifest, measures the models (`[eval]`) and trains the next one. The
//! other processes (*followers*) wait for the leader's claim, run the graphs, and between
//! iterations wait for the model the leader trains.
//!
//! A process that fails or is killed takes the cluster down (timely cannot re-form a cluster
//! around a restarted process): the others stop with an error, and the same commands, run
//! again, resume from what every process committed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::PipelineError;
use crate::progress::Reporter;
use crate::store::{Manifest, StoreError, read_json, write_json_atomic};

/// This process's place in a cluster of processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index, `0..addresses.len()`; 0 is the leader.
    pub process: usize,
    /// `host:port` of every process, in process order (one line each in the hostfile).
    pub addresses: Vec<String>,
}

impl Cluster {
    /// Reads the hostfile (timely's format: one `host:port` per line, in process order; blank
    /// lines and `#` comments are skipped) and checks it against `--processes` and `--process`.
    pub fn from_hostfile(
        processes: usize,
        process: usize,
        hostfile: &Path,
    ) -> Result<Self, PipelineError> {
        let text =
            std::fs::read_to_string(hostfile).map_err(|e| invalid(hostfile, e.to_string()))?;
        Self::parse(processes, process, &text).map_err(|why| invalid(hostfile, why))
    }

    fn parse(processes: usize, process: usize, text: &str) -> Result<Self, String> {
        if processes == 0 {
            return Err("--processes 0: a run needs at least one process".into());
        }
        if process >= processes {
            return Err(format!(
                "--process {process}: processes are numbered 0 to {} (--processes {processes})",
                processes - 1
            ));
        }
        let mut addresses = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let valid = line
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(format!(
                    "line {}: {line:?} is not host:port (e.g. 10.0.0.2:2101)",
                    n + 1
                ));
            }
            addresses.push(line.to_string());
        }
        if addresses.len() < processes {
            return Err(format!(
                "lists {} address(es) but --processes is {processes}: one host:port line per process, in process order",
                addresses.len()
            ));
        }
        addresses.truncate(processes);
        Ok(Cluster { process, addresses })
    }

    pub fn processes(&self) -> usize {
        self.addresses.len()
    }

    /// Whether this process writes the results (process 0).
    pub fn is_leader(&self) -> bool {
        self.process == 0
    }
}

/// Timely's configuration for `workers` threads in this process, alone or in `cluster`.
pub fn timely_config(cluster: Option<&Cluster>, workers: usize) -> timely::Config {
    match cluster.filter(|c| c.processes() > 1) {
        None => timely::Config::process(workers),
        Some(c) => timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads: workers,
                process: c.process,
                addresses: c.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        },
    }
}

/// `<run>/leader.json`: what the leader is doing, for the followers to wait on between
/// iterations (while it trains and measures the next model), so that they do not knock at a
/// port nobody listens on for hours. Each write carries a fresh `nonce`, so a follower tells the
/// leader's news from what a stopped segment left behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderState {
    pub phase: LeaderPhase,
    pub nonce: String,
}

/// See [`LeaderState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaderPhase {
    /// About to run iteration `iteration`'s graph.
    Graph { iteration: u32 },
    /// The run stopped with an error.
    Stopped { why: String },
    /// The run is complete.
    Finished,
}

const LEADER_FILE: &str = "leader.json";

/// Tells the followers what the leader does now.
pub fn announce(run_dir: &Path, phase: LeaderPhase) -> Result<(), StoreError> {
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        crate::store::unix_time().as_nanos()
    );
    write_json_atomic(&run_dir.join(LEADER_FILE), &LeaderState { phase, nonce })
}

/// What the leader announced last, if anything.
pub fn leader_state(run_dir: &Path) -> Result<Option<LeaderState>, StoreError> {
    read_json(&run_dir.join(LEADER_FILE))
}

/// Waits until the leader is about to run iteration `iteration`'s graph. `stale` is what the
/// file held when this follower started: a stop or end it announced belongs to an earlier
/// segment and is not waited on (an earlier announcement of the same iteration is taken: at
/// worst timely knocks a little early). Notes a wait longer than 2 s, then once a minute.
pub fn wait_for_leader(
    run_dir: &Path,
    iteration: u32,
    stale: Option<&LeaderState>,
    notes: &dyn Reporter,
) -> Result<(), PipelineError> {
    let started = Instant::now();
    let mut noted: Option<Instant> = None;
    loop {
        match leader_state(run_dir)? {
            Some(LeaderState {
                phase: LeaderPhase::Graph { iteration: t },
                ..
            }) if t == iteration => return Ok(()),
            Some(state) if Some(&state) != stale => match state.phase {
                LeaderPhase::Stopped { why } => {
                    return Err(PipelineError::Stopped(format!("process 0 stopped: {why}")));
                }
                LeaderPhase::Finished => {
                    return Err(PipelineError::Stopped(format!(
                        "process 0 finished the run without iteration {iteration}"
                    )));
                }
                LeaderPhase::Graph { .. } => {}
            },
            _ => {}
        }
        let due = match noted {
            None => started.elapsed() >= Duration::from_secs(2),
            Some(at) => at.elapsed() >= Duration::from_secs(60),
        };
        if due {
            notes.note(&format!(
                "waiting for process 0 to start iteration {iteration} ({:.0} s so far; it measures and trains the models between iterations)",
                started.elapsed().as_secs_f64()
            ));
            noted = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until the leader has claimed the run folder for these settings (the followers never
/// write the manifest), and fails if it holds a run with other settings.
pub fn wait_for_claim(
    run_dir: &Path,
    settings: &serde_json::Value,
    model: &str,
    notes: &dyn Reporter,
) -> Result<(), PipelineError> {
    let mut noted = false;
    while Manifest::inspect(run_dir, settings, model)?.is_none() {
        if !noted {
            notes.note(&format!(
                "waiting for process 0 to claim {}",
                run_dir.display()
            ));
            noted = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

fn invalid(hostfile: &Path, why: String) -> PipelineError {
    PipelineError::Invalid {
        path: PathBuf::from(hostfile),
        why: format!("hostfile: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostfiles_are_read_in_process_order() {
        let text = "# the leader\n127.0.0.1:2101\n\n127.0.0.1:2102  # a follower\n";
        let c = Cluster::parse(2, 1, text).unwrap();
        assert_eq!(c.addresses, ["127.0.0.1:2101", "127.0.0.1:2102"]);
        assert!(!c.is_leader());
        assert!(Cluster::parse(2, 0, text).unwrap().is_leader());
        // A longer file serves a smaller cluster from its first lines.
        assert_eq!(Cluster::parse(1, 0, text).unwrap().processes(), 1);
    }

    #[test]
    fn a_follower_waits_for_news_not_for_an_earlier_segment() {
        let dir = tempfile::tempdir().unwrap();
        announce(dir.path(), LeaderPhase::Stopped { why: "old".into() }).unwrap();
        let stale = leader_state(dir.path()).unwrap();
        let run_dir = dir.path().to_path_buf();
        let leader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            announce(&run_dir, LeaderPhase::Graph { iteration: 1 }).unwrap();
        });
        // The old stop is not news: the follower waits for iteration 1.
        wait_for_leader(dir.path(), 1, stale.as_ref(), &crate::progress::Silent).unwrap();
        leader.join().unwrap();
        let stale = leader_state(dir.path()).unwrap();
        announce(
            dir.path(),
            LeaderPhase::Stopped {
                why: "no space".into(),
            },
        )
        .unwrap();
        let err =
            wait_for_leader(dir.path(), 2, stale.as_ref(), &crate::progress::Silent).unwrap_err();
        assert!(
            err.to_string().contains("process 0 stopped: no space"),
            "{err}"
        );
    }

    #[test]
    fn bad_hostfiles_say_what_is_wrong() {
        let err = Cluster::parse(3, 0, "a:1\nb:2\n").unwrap_err();
        assert!(
            err.contains("2 address(es)") && err.contains("--processes is 3"),
            "{err}"
        );
        let err = Cluster::parse(2, 2, "a:1\nb:2\n").unwrap_err();
        assert!(
            err.contains("--process 2") && err.contains("0 to 1"),
            "{err}"
        );
        let err = Cluster::parse(2, 0, "a:1\nb\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("host:port"), "{err}");
        let err = Cluster::parse(2, 0, "a:1\nb:http\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }
}
