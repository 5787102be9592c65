//! The time an iteration took over all the segments it ran in (a run killed and resumed runs an
//! iteration in several), so that its summary covers the whole iteration and not the last
//! segment, whose model time is mostly replayed checkpoints.
//!
//! Contract: each segment of an iteration writes `iter-<t>/segments/<id>.json` (its wall time and
//! its backends' stage times so far) every [`SAVE_EVERY`] while it runs, and once more at the end
//! with the final figures, atomically. [`IterationSegments::total`] adds up every segment of the folder:
//! wall times, requests, tokens, busy seconds and spans add (segments run one after another). A
//! SIGKILL loses at most the last [`SAVE_EVERY`] of one segment's figures.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::backends::StageClocks;
use super::summary::{StageTime, merge_stage_times};
use crate::store::{StoreError, read_json, write_json_atomic};

/// How often a running segment saves its figures.
pub const SAVE_EVERY: Duration = Duration::from_secs(15);

/// One segment's figures, as saved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub wall_s: f64,
    pub stage_times: Vec<StageTime>,
}

/// Saves this segment's figures in the background while the iteration runs.
pub struct SegmentRecorder {
    path: PathBuf,
    started: Instant,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SegmentRecorder {
    /// Starts saving `iter_dir/segments/<id>.json` (the wall time since `started`, the stage
    /// times from `clocks`) every [`SAVE_EVERY`].
    pub fn start(iter_dir: &Path, clocks: StageClocks, started: Instant) -> SegmentRecorder {
        let id = format!(
            "{}-{}",
            crate::store::unix_time().as_millis(),
            std::process::id()
        );
        let path = iter_dir.join("segments").join(format!("{id}.json"));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (path, stop) = (path.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("segment".into())
                .spawn(move || {
                    let mut last = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(250));
                        if last.elapsed() >= SAVE_EVERY {
                            last = Instant::now();
                            let _ = save(&path, started, clocks.times());
                        }
                    }
                })
                .expect("spawning the segment thread")
        };
        SegmentRecorder {
            path,
            started,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the background saves and saves the segment's final figures (`stage_times`: this
    /// segment's, over every process of a cluster).
    pub fn finish(mut self, stage_times: Vec<StageTime>) -> Result<(), StoreError> {
        self.halt();
        save(&self.path, self.started, stage_times)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SegmentRecorder {
    fn drop(&mut self) {
        self.halt();
    }
}

fn save(path: &Path, started: Instant, stage_times: Vec<StageTime>) -> Result<(), StoreError> {
    write_json_atomic(
        path,
        &Segment {
            wall_s: started.elapsed().as_secs_f64(),
            stage_times,
        },
    )
}

/// Every segment an iteration ran in.
pub struct IterationSegments(pub Vec<Segment>);

impl IterationSegments {
    /// Reads `iter_dir/segments/`.
    pub fn read(iter_dir: &Path) -> Result<IterationSegments, StoreError> {
        let dir = iter_dir.join("segments");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(IterationSegments(Vec::new()));
            }
            Err(e) => {
                return Err(StoreError::Io {
                    path: dir,
                    source: e,
                });
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        let mut segments = Vec::new();
        for path in paths {
            if let Some(segment) = read_json::<Segment>(&path)? {
                segments.push(segment);
            }
        }
        Ok(IterationSegments(segments))
    }

    /// All segments as one: wall times and every stage's figures added.
    pub fn total(&self) -> Segment {
        Segment {
            wall_s: self.0.iter().map(|s| s.wall_s).sum(),
            stage_times: merge_stage_times(self.0.iter().map(|s| s.stage_times.clone()), |a, b| {
                a + b
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(stage: &str, requests: u64, span_s: f64) -> StageTime {
        StageTime {
            stage: stage.into(),
            requests,
            tokens: requests * 100,
            busy_s: span_s / 2.0,
            span_s,
        }
    }

    #[test]
    fn an_iteration_killed_and_resumed_adds_up_its_segments() {
        let dir = tempfile::tempdir().unwrap();
        // A first segment that was killed after saving once, then a finished one.
        let killed = dir.path().join("segments/1-10.json");
        write_json_atomic(
            &killed,
            &Segment {
                wall_s: 600.0,
                stage_times: vec![time("candidates", 40, 500.0)],
            },
        )
        .unwrap();
        let resumed = SegmentRecorder::start(dir.path(), StageClocks::default(), Instant::now());
        resumed
            .finish(vec![
                time("candidates", 8, 90.0),
                time("executions", 3, 5.0),
            ])
            .unwrap();
        let total = IterationSegments::read(dir.path()).unwrap().total();
        assert!(
            total.wall_s >= 600.0 && total.wall_s < 610.0,
            "{}",
            total.wall_s
        );
        assert_eq!(
            total.stage_times,
            [time("candidates", 48, 590.0), time("executions", 3, 5.0)]
        );
        assert_eq!(
            IterationSegments::read(&dir.path().join("none")).unwrap().0,
            []
        );
    }
}
