//! [`CoreSplit`]: how the configured cores are shared between the engine and the sandbox.

use serde::Serialize;

use crate::config::ResourceConfig;

/// How the configured cores are shared between the engine and the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CoreSplit {
    pub cores: usize,
    pub engine_threads: usize,
    pub sandbox_workers: usize,
    pub dataflow_workers: usize,
}

impl CoreSplit {
    /// Plans the split: by default a quarter of the cores (at least one) run sandbox workers and
    /// the rest run the engine. Engine threads plus sandbox workers never exceed `cores`
    /// (candle's threads busy-wait; oversubscribing them costs several-fold). Timely workers are
    /// not counted: they park when idle and do little work.
    pub fn plan(resources: &ResourceConfig, available: usize) -> Result<Self, String> {
        if resources.cores == Some(0) || resources.dataflow_workers == 0 {
            return Err("resources.cores and resources.dataflow_workers must be at least 1".into());
        }
        if let Some(cores) = resources.cores.filter(|&c| c > available) {
            return Err(format!(
                "resources.cores = {cores}, but this machine has {available}; candle's threads \
                 busy-wait, so more engine threads and sandbox workers than cores slow decoding \
                 several-fold. Set resources.cores to {available} or less (or leave it out)"
            ));
        }
        let cores = resources.cores.unwrap_or(available).max(1);
        let sandbox_workers = resources
            .sandbox_workers
            .unwrap_or_else(|| (cores / 4).max(1));
        let engine_threads = resources
            .engine_threads
            .unwrap_or_else(|| cores.saturating_sub(sandbox_workers).max(1));
        if sandbox_workers == 0 || engine_threads == 0 {
            return Err(
                "resources.engine_threads and resources.sandbox_workers must be at least 1".into(),
            );
        }
        if engine_threads + sandbox_workers > cores {
            return Err(format!(
                "resources: engine_threads ({engine_threads}) + sandbox_workers ({sandbox_workers}) exceed cores ({cores}); \
                 candle's threads busy-wait, so an oversubscribed CPU slows decoding several-fold. \
                 Lower one of them, or raise resources.cores if this machine really has more"
            ));
        }
        Ok(CoreSplit {
            cores,
            engine_threads,
            sandbox_workers,
            dataflow_workers: resources.dataflow_workers,
        })
    }

    /// The split when completions come from a model server: no engine threads, and by default
    /// every core runs a sandbox worker.
    pub fn plan_without_engine(
        resources: &ResourceConfig,
        available: usize,
    ) -> Result<Self, String> {
        if resources.engine_threads.is_some() {
            return Err(
                "resources.engine_threads: no in-process engine runs with [model] backend = \"openai\"; remove it"
                    .into(),
            );
        }
        let with_engine = Self::plan(resources, available)?;
        let sandbox_workers = resources.sandbox_workers.unwrap_or(with_engine.cores);
        if sandbox_workers == 0 || sandbox_workers > with_engine.cores {
            return Err(format!(
                "resources.sandbox_workers = {sandbox_workers}: must be between 1 and cores ({})",
                with_engine.cores
            ));
        }
        Ok(CoreSplit {
            engine_threads: 0,
            sandbox_workers,
            ..with_engine
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(
        cores: Option<usize>,
        engine: Option<usize>,
        sandbox: Option<usize>,
    ) -> ResourceConfig {
        ResourceConfig {
            cores,
            engine_threads: engine,
            sandbox_workers: sandbox,
            dataflow_workers: 1,
        }
    }

    #[test]
    fn a_server_run_gives_every_core_to_the_sandbox() {
        let split = CoreSplit::plan_without_engine(&resources(None, None, None), 4).unwrap();
        assert_eq!((split.engine_threads, split.sandbox_workers), (0, 4));
        let err = CoreSplit::plan_without_engine(&resources(None, Some(1), None), 4).unwrap_err();
        assert!(err.contains("engine_threads"), "{err}");
    }

    #[test]
    fn core_split_never_oversubscribes() {
        let two = CoreSplit::plan(&resources(None, None, None), 2).unwrap();
        assert_eq!((two.engine_threads, two.sandbox_workers), (1, 1));
        let sixteen = CoreSplit::plan(&resources(None, None, None), 16).unwrap();
        assert_eq!((sixteen.engine_threads, sixteen.sandbox_workers), (12, 4));
        let pinned = CoreSplit::plan(&resources(Some(8), Some(2), None), 8).unwrap();
        assert_eq!((pinned.engine_threads, pinned.sandbox_workers), (2, 2));
        let err = CoreSplit::plan(&resources(Some(64), None, None), 2).unwrap_err();
        assert!(
            err.contains("resources.cores = 64, but this machine has 2"),
            "{err}"
        );
        let err = CoreSplit::plan(&resources(None, Some(2), Some(1)), 2).unwrap_err();
        assert!(err.contains("exceed cores (2)"), "{err}");
    }
}
