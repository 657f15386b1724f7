//! The plugin-file watcher (inotify through `notify`), debounced per directory,
//! and the atomic write that persists an uploaded version beside it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::plugin::chain::ChainSpec;
use crate::plugin::swap::HotSwap;

/// The directory the watcher watches for a plugin file: its parent, canonical
/// (events name files under the path that was watched).
pub fn watch_dir(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path.parent()?).ok()
}

/// Replace `path` with `bytes` so that no reader sees a half-written file: a
/// temporary file in the same directory (with the old file's permissions),
/// synced, renamed over it, and the directory synced. A symbolic link is not
/// replaced (that would break a `current.wasm -> v3.wasm` layout): an error.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
        // InvalidInput: a refusal of this deployment's layout (HTTP 422), not a failure of the disk (500).
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is a symbolic link, not replaced (point the plugin's path at a regular file, or set hot_swap.persist_uploads = false)",
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("plugin");
    // A name no one can guess, created new: a link or file planted at it is never followed or overwritten.
    let tmp = dir.join(format!(".{name}.{}.{:016x}.sluice-tmp", std::process::id(), fastrand::u64(..)));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    let result = (|| {
        if let Ok(m) = std::fs::metadata(path) {
            f.set_permissions(m.permissions())?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether a file event may have changed a file's content or which file a name is.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::EventKind as K;
    use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
    match kind {
        K::Create(_) | K::Remove(_) => true,
        K::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        K::Modify(_) => true,
        K::Access(AccessKind::Close(AccessMode::Write)) => true,
        K::Access(_) | K::Any | K::Other => false,
    }
}

/// Directories with events not yet checked: per directory, when its first
/// pending event came and when its check is due.
struct Pending {
    debounce: Duration,
    /// The longest a directory waits after its first pending event, so that one
    /// with a file written more often than every `debounce` is still checked.
    max_wait: Duration,
    due: HashMap<PathBuf, (Instant, Instant)>,
}

impl Pending {
    fn new(debounce: Duration) -> Pending {
        Pending { debounce, max_wait: (debounce * 10).max(Duration::from_secs(1)), due: HashMap::new() }
    }

    /// An event at `now` in `dir`, or in any directory (`None`: a rescan); one
    /// not `watched` is ignored. A directory is checked after `debounce` of quiet,
    /// at the latest `max_wait` after its first pending event.
    fn event(&mut self, dir: Option<&Path>, watched: &HashSet<PathBuf>, now: Instant) {
        for dir in watched.iter().filter(|w| dir.is_none_or(|d| d == *w)) {
            let (first, at) = self.due.entry(dir.clone()).or_insert((now, now));
            *at = (now + self.debounce).min(*first + self.max_wait);
        }
    }

    fn next(&self) -> Option<Instant> {
        self.due.values().map(|(_, at)| *at).min()
    }

    /// The directories due at `now`, no longer pending.
    fn take_due(&mut self, now: Instant) -> Vec<PathBuf> {
        self.due.extract_if(|_, (_, at)| *at <= now).map(|(dir, _)| dir).collect()
    }
}

/// Watch the directories of the running chain's plugin files; after `debounce`
/// of quiet in a directory (or at most `max(10 × debounce, 1s)` after its first
/// change), ask [`HotSwap::files_changed`] to look at it. Follows reloads (new
/// paths are watched, dropped ones no longer).
pub fn spawn_watcher(hot: Arc<HotSwap>, debounce: Duration) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
    use notify::{RecursiveMode, Watcher as _};
    // A directory with a change, or `None`: any watched directory may have changed.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<PathBuf>>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        // Events were lost (the kernel's queue overflowed).
        Ok(e) if e.need_rescan() => {
            let _ = tx.send(None);
        }
        // Content or name changes only: reading a file (ours included) is no change.
        Ok(e) if is_change(&e.kind) => {
            for p in e.paths {
                if let Some(dir) = p.parent() {
                    let _ = tx.send(Some(dir.to_owned()));
                }
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("plugin file watcher: {e}"),
    })?;
    let mut specs = hot.subscribe();
    let mut watched: HashSet<PathBuf> = HashSet::new();
    let mut sync = move |watcher: &mut notify::RecommendedWatcher, spec: &ChainSpec| {
        let wanted: HashSet<PathBuf> = spec.plugins.iter().filter_map(|p| watch_dir(&p.path)).collect();
        for gone in watched.difference(&wanted) {
            let _ = watcher.unwatch(gone);
        }
        for dir in wanted.difference(&watched) {
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => tracing::info!(dir = %dir.display(), "watching plugin files"),
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch plugin files: {e}"),
            }
        }
        watched = wanted.clone();
        wanted
    };
    let mut dirs = sync(&mut watcher, &specs.borrow_and_update());
    Ok(tokio::spawn(async move {
        let mut pending = Pending::new(debounce);
        loop {
            let next = pending.next();
            tokio::select! {
                dir = rx.recv() => match dir {
                    Some(dir) => pending.event(dir.as_deref(), &dirs, Instant::now()),
                    None => break,
                },
                changed = specs.changed() => {
                    if changed.is_err() { break; }
                    let spec = specs.borrow_and_update().clone();
                    dirs = sync(&mut watcher, &spec);
                }
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    for dir in pending.take_due(Instant::now()) {
                        hot.files_changed(&dir).await;
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_checked_after_a_quiet_debounce_or_at_most_the_maximum_wait() {
        let ms = Duration::from_millis;
        let (a, b) = (PathBuf::from("/a"), PathBuf::from("/b"));
        let watched = HashSet::from([a.clone(), b.clone()]);
        let mut pending = Pending::new(ms(100));
        let t0 = Instant::now();
        pending.event(Some(Path::new("/elsewhere")), &watched, t0);
        assert_eq!(pending.next(), None, "not watched");

        // `a` written every 50 ms for 3 s: checked once a second all the same.
        let mut checks = Vec::new();
        for i in 0..=60 {
            let now = t0 + ms(50 * i);
            checks.extend(pending.take_due(now).into_iter().map(|d| (d, now - t0)));
            pending.event(Some(&a), &watched, now);
        }
        assert_eq!(checks, [(a.clone(), ms(1000)), (a.clone(), ms(2000)), (a.clone(), ms(3000))]);
        // Quiet: checked `debounce` after the last event.
        assert_eq!(pending.next(), Some(t0 + ms(3100)));

        // A rescan: every watched directory.
        pending.event(None, &watched, t0 + ms(3050));
        let mut due = pending.take_due(t0 + ms(3150));
        due.sort();
        assert_eq!(due, [a, b]);
        assert_eq!(pending.next(), None);
    }
}
