//! What a stage costs in GPU launches, and the warm-up that compiles every pipeline a
//! generation needs before its first step (CubeCL's launch observer, dry run and launched-
//! kernel collection; natively and in wasm alike).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::cubecl::dry_run::DryRun;
use burn::cubecl::launched::LaunchedKernels;
use burn::cubecl::logging::{
    Duration, LaunchObservation, LaunchObserver, TimingMethod, TimingRequest,
};

/// The process's launch observer (CubeCL has one slot): counts every dispatch, and times each
/// one when profiling was asked for before the first count.
struct Observer {
    count: AtomicUsize,
    profile: Option<std::sync::Mutex<std::collections::HashMap<&'static str, (usize, f64)>>>,
}

impl LaunchObserver for Observer {
    fn launched(&self, _kernel: &'static str) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn timing(&self) -> TimingRequest {
        if self.profile.is_some() {
            TimingRequest::Resolved
        } else {
            TimingRequest::None
        }
    }

    fn timed(&self, kernel: &'static str, duration: Duration, _method: TimingMethod) {
        if let Some(Ok(mut table)) = self.profile.as_ref().map(|p| p.lock()) {
            let entry = table.entry(kernel).or_default();
            entry.0 += 1;
            entry.1 += duration.as_secs_f64() * 1000.0;
        }
    }
}

static OBSERVER: std::sync::OnceLock<Arc<Observer>> = std::sync::OnceLock::new();

fn observer(profile: bool) -> &'static Arc<Observer> {
    OBSERVER.get_or_init(|| {
        let observer = Arc::new(Observer {
            count: AtomicUsize::new(0),
            profile: profile.then(Default::default),
        });
        // Installed for the rest of the process.
        std::mem::forget(LaunchObservation::new(observer.clone()));
        observer
    })
}

/// Counts the GPU dispatches issued from its start (by every thread, on every device).
pub struct DispatchCounter {
    start: usize,
}

impl DispatchCounter {
    pub fn start() -> Self {
        Self {
            start: observer(false).count.load(Ordering::Relaxed),
        }
    }

    /// Dispatches since the start.
    pub fn count(&self) -> usize {
        observer(false).count.load(Ordering::Relaxed) - self.start
    }
}

/// From now on, time every kernel (each launch is waited for, so kernels run one at a time and
/// a pass is slower). Only before the first [`DispatchCounter`]: false if too late.
pub fn enable_profiling() -> bool {
    observer(true).profile.is_some()
}

/// (kernel, launches, total ms) since profiling was enabled (or the last call), the most
/// expensive first.
pub fn take_profile() -> Vec<(String, usize, f64)> {
    let Some(Ok(mut table)) = observer(false).profile.as_ref().map(|p| p.lock()) else {
        return Vec::new();
    };
    let mut rows: Vec<_> = table
        .drain()
        .map(|(name, (n, ms))| (short_kernel_name(name), n, ms))
        .collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    rows
}

/// While it lives, launches are compiled (and cached) but not run, and every distinct kernel
/// (one compute pipeline each) is collected. Anything read back meanwhile is meaningless.
pub struct CompilePass {
    collected: LaunchedKernels,
    _dry_run: DryRun,
}

impl CompilePass {
    pub fn start() -> Self {
        Self {
            collected: LaunchedKernels::new(),
            _dry_run: DryRun::new(),
        }
    }

    /// The number of distinct pipelines the pass launched.
    pub fn finish(self) -> usize {
        self.collected.finish().len()
    }
}

/// `a::b::Kernel<c::D>` → `Kernel<D>`.
fn short_kernel_name(name: &str) -> String {
    let mut out = String::new();
    let mut segment = String::new();
    for ch in name.chars() {
        match ch {
            ':' => segment.clear(),
            '<' | '>' | ',' | ' ' => {
                out.push_str(&segment);
                segment.clear();
                out.push(ch);
            }
            _ => segment.push(ch),
        }
    }
    out + &segment
}
