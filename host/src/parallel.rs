//! The CPU paths' one way of spreading independent work over threads.

/// Runs `work(scratch, item)` for items `0..items` on up to `available_parallelism`
/// threads (round-robin, one `scratch()` per thread, threads named `flashscan-{name}-N`)
/// and returns the results in item order. Each item's arithmetic is the same on any
/// thread, so the results do not depend on the thread count.
pub(crate) fn run_parallel<S, R: Send>(
    name: &str,
    items: usize,
    scratch: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, usize) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items).max(1);
    let run = |first: usize| -> Vec<(usize, R)> {
        let mut s = scratch();
        (first..items).step_by(threads).map(|item| (item, work(&mut s, item))).collect()
    };
    let parts: Vec<Vec<(usize, R)>> = if threads == 1 {
        vec![run(0)]
    } else {
        std::thread::scope(|scope| {
            let run = &run;
            let spawned: Vec<_> = (0..threads)
                .map(|t| {
                    let worker = std::thread::Builder::new().name(format!("flashscan-{name}-{t}"));
                    (t, worker.spawn_scoped(scope, move || run(t)))
                })
                .collect();
            spawned
                .into_iter()
                .map(|(t, handle)| match handle {
                    // A worker only panics on a bug in the caller's work; re-raise it rather than hide it.
                    Ok(h) => h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
                    // The OS gave no thread: do that share of the work here.
                    Err(_) => run(t),
                })
                .collect()
        })
    };
    let mut all: Vec<(usize, R)> = parts.into_iter().flatten().collect();
    all.sort_by_key(|(item, _)| *item);
    all.into_iter().map(|(_, r)| r).collect()
}
