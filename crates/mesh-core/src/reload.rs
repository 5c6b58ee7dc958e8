//! Hot reload: watch the config files, recompile, swap the snapshot whole.
//!
//! Readers call [`SnapshotHandle::load`] on every request: one atomic load of
//! an `Arc`, no lock. A reload compiles a complete new [`Snapshot`] off the
//! request path and swaps it in only if the whole configuration is valid; a
//! configuration with any error is refused and the running snapshot stays,
//! with the failure kept for `/config_dump` and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::diag::Diagnostics;
use crate::load::{LoadOptions, load_paths};
use crate::snapshot::Snapshot;

/// Where configuration comes from: files and folders, read with options.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    /// Files or folders, loaded in this order.
    pub paths: Vec<PathBuf>,
    /// Loader options (default namespace).
    pub options: LoadOptions,
}

/// A configuration that was refused, and why.
#[derive(Clone, Debug)]
pub struct ReloadFailure {
    /// The generation that stayed in force.
    pub kept_generation: u64,
    /// Every diagnostic of the refused load (errors and warnings).
    pub diagnostics: Diagnostics,
}

/// What one reload did.
#[derive(Clone, Debug)]
pub enum ReloadOutcome {
    /// A new snapshot is in force.
    Swapped {
        /// Its generation.
        generation: u64,
    },
    /// The configuration's content did not change; nothing was swapped.
    Unchanged,
    /// The configuration had errors; the running snapshot stays.
    Refused(ReloadFailure),
}

/// The current snapshot, shared by every reader.
#[derive(Clone)]
pub struct SnapshotHandle {
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwap<Snapshot>,
    last_failure: ArcSwapOption<ReloadFailure>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    notify: watch::Sender<u64>,
    attempts: watch::Sender<u64>,
    source: ConfigSource,
}

impl SnapshotHandle {
    /// The snapshot in force. Cheap: one atomic load.
    pub fn load(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// A receiver that sees each new generation.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.notify.subscribe()
    }

    /// A receiver that sees the count of reload attempts (swapped, unchanged
    /// or refused), for tools and tests that wait for a reload to finish.
    pub fn subscribe_attempts(&self) -> watch::Receiver<u64> {
        self.shared.attempts.subscribe()
    }

    /// The last refused configuration, if the last reload attempt failed.
    pub fn last_failure(&self) -> Option<Arc<ReloadFailure>> {
        self.shared.last_failure.load_full()
    }

    /// Successful and refused reloads since start.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.shared.reloads_ok.load(Ordering::Relaxed),
            self.shared.reloads_failed.load(Ordering::Relaxed),
        )
    }

    /// Loads the source again now and swaps if it is valid and changed.
    /// Blocking (file IO and compilation): call it from a blocking context.
    pub fn reload_now(&self) -> ReloadOutcome {
        let outcome = self.reload_inner();
        self.shared.attempts.send_modify(|n| *n += 1);
        outcome
    }

    fn reload_inner(&self) -> ReloadOutcome {
        let shared = &self.shared;
        let current = shared.current.load();
        let loaded = load_paths(&shared.source.paths, &shared.source.options);
        if loaded.diagnostics.has_errors() {
            let failure = ReloadFailure {
                kept_generation: current.generation,
                diagnostics: loaded.diagnostics,
            };
            shared.reloads_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                kept_generation = current.generation,
                errors = failure.diagnostics.count(crate::diag::Severity::Error),
                "configuration refused; keeping the running snapshot:\n{}",
                failure.diagnostics
            );
            shared.last_failure.store(Some(Arc::new(failure.clone())));
            return ReloadOutcome::Refused(failure);
        }
        shared.last_failure.store(None);
        let next = Snapshot::compile(current.generation + 1, loaded);
        if next.content_hash == current.content_hash {
            return ReloadOutcome::Unchanged;
        }
        let generation = next.generation;
        shared.current.store(Arc::new(next));
        shared.reloads_ok.fetch_add(1, Ordering::Relaxed);
        shared.notify.send_replace(generation);
        tracing::info!(generation, "configuration reloaded");
        ReloadOutcome::Swapped { generation }
    }
}

/// The first load failed: nothing can run.
#[derive(Debug, thiserror::Error)]
#[error("the configuration has errors:\n{0}")]
pub struct InitialLoadError(pub Diagnostics);

/// Loads `source` once; the result is the first snapshot (generation 1).
pub fn initial(source: ConfigSource) -> Result<SnapshotHandle, InitialLoadError> {
    let loaded = load_paths(&source.paths, &source.options);
    if loaded.diagnostics.has_errors() {
        return Err(InitialLoadError(loaded.diagnostics));
    }
    for d in loaded.diagnostics.iter() {
        tracing::debug!("{d}");
    }
    let snapshot = Snapshot::compile(1, loaded);
    let (notify, _) = watch::channel(1);
    let (attempts, _) = watch::channel(0);
    Ok(SnapshotHandle {
        shared: Arc::new(Shared {
            current: ArcSwap::from_pointee(snapshot),
            last_failure: ArcSwapOption::empty(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            notify,
            attempts,
            source,
        }),
    })
}

/// Keeps the file watcher alive; dropping it stops watching.
pub struct ConfigWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Editors write a file in several steps (truncate, write, rename): wait for
/// this much quiet before reloading, so one save is one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watches every path of the handle's source and reloads on change. Must be
/// called inside a tokio runtime.
pub fn watch(handle: &SnapshotHandle) -> notify::Result<ConfigWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
        {
            let _ = tx.send(());
        }
    })?;
    for path in &handle.shared.source.paths {
        // Watch a file's folder, not the file: editors and Kubernetes
        // ConfigMap mounts replace files by renaming, which would end a
        // watch on the old inode.
        let (target, mode) = if path.is_dir() {
            (path.clone(), RecursiveMode::Recursive)
        } else {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            (parent.to_path_buf(), RecursiveMode::NonRecursive)
        };
        watcher.watch(&target, mode)?;
    }
    let handle = handle.clone();
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: keep draining until the files are quiet.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            let h = handle.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || h.reload_now()).await {
                tracing::error!("reload task failed: {e}");
            }
        }
    });
    Ok(ConfigWatcher {
        _watcher: watcher,
        task,
    })
}
