//! Background preparation of batches: worker threads run a job function over a fixed list of
//! jobs, at most `depth` jobs ahead of the consumer, and the consumer receives the results in
//! job order (so training is deterministic whatever the thread timing). The time the consumer
//! spends waiting is measured, to report the data-wait share of a step. A job that panics
//! is delivered as a [`JobPanicked`] in its place, so the consumer ends with the panic's
//! message instead of waiting forever for a result that will never come.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A job whose function panicked: its index and the panic's message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("loader job {job} panicked: {message}")]
pub struct JobPanicked {
    pub job: usize,
    pub message: String,
}

/// The result of one job: its value, or the panic that ended it.
pub type JobResult<T> = std::result::Result<T, JobPanicked>;

struct Shared<T> {
    /// Finished results by job index, and the index the consumer wants next.
    state: Mutex<(BTreeMap<usize, JobResult<T>>, usize)>,
    ready: Condvar,
    room: Condvar,
    next_job: AtomicUsize,
    stop: AtomicBool,
}

/// Ordered results of `jobs` computed in the background.
pub struct Prefetcher<T> {
    shared: Arc<Shared<T>>,
    workers: Vec<JoinHandle<()>>,
    jobs: usize,
    delivered: usize,
    waited: Duration,
}

impl<T: Send + 'static> Prefetcher<T> {
    /// Starts `workers` threads computing `run(job)` for jobs `0..jobs`, at most `depth` ahead.
    pub fn start<F>(jobs: usize, workers: usize, depth: usize, run: F) -> Self
    where
        F: Fn(usize) -> T + Send + Sync + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new((BTreeMap::new(), 0)),
            ready: Condvar::new(),
            room: Condvar::new(),
            next_job: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let run = Arc::new(run);
        let depth = depth.max(1);
        let workers = (0..workers.max(1))
            .map(|_| {
                let (shared, run) = (shared.clone(), run.clone());
                std::thread::spawn(move || worker(&shared, &*run, jobs, depth))
            })
            .collect();
        Prefetcher {
            shared,
            workers,
            jobs,
            delivered: 0,
            waited: Duration::ZERO,
        }
    }

    /// Total time [`Iterator::next`] has spent waiting for results.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

fn worker<T>(
    shared: &Shared<T>,
    run: &(dyn Fn(usize) -> T + Send + Sync),
    jobs: usize,
    depth: usize,
) {
    loop {
        let job = shared.next_job.fetch_add(1, Ordering::SeqCst);
        if job >= jobs || shared.stop.load(Ordering::SeqCst) {
            return;
        }
        {
            let mut state = shared.state.lock().expect("prefetch lock");
            while job >= state.1 + depth && !shared.stop.load(Ordering::SeqCst) {
                state = shared.room.wait(state).expect("prefetch lock");
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let result = catch_unwind(AssertUnwindSafe(|| run(job))).map_err(|payload| JobPanicked {
            job,
            message: panic_message(payload.as_ref()),
        });
        shared
            .state
            .lock()
            .expect("prefetch lock")
            .0
            .insert(job, result);
        shared.ready.notify_all();
    }
}

/// The text a panic was raised with (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

impl<T> Iterator for Prefetcher<T> {
    type Item = JobResult<T>;

    fn next(&mut self) -> Option<JobResult<T>> {
        if self.delivered == self.jobs {
            return None;
        }
        let started = Instant::now();
        let mut state = self.shared.state.lock().expect("prefetch lock");
        let result = loop {
            if let Some(result) = state.0.remove(&self.delivered) {
                break result;
            }
            state = self.shared.ready.wait(state).expect("prefetch lock");
        };
        self.delivered += 1;
        state.1 = self.delivered;
        drop(state);
        self.shared.room.notify_all();
        self.waited += started.elapsed();
        Some(result)
    }
}

impl<T> Drop for Prefetcher<T> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.room.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_job_order_whatever_the_timing() {
        let results: Vec<usize> = Prefetcher::start(50, 4, 3, |job| {
            std::thread::sleep(Duration::from_micros(((job * 7919) % 13) as u64 * 100));
            job * job
        })
        .collect::<Result<_, _>>()
        .unwrap();
        assert_eq!(results, (0..50).map(|j| j * j).collect::<Vec<_>>());
    }

    #[test]
    fn workers_stay_within_the_depth_and_stop_when_dropped() {
        let started = Arc::new(AtomicUsize::new(0));
        let counter = started.clone();
        let mut prefetcher = Prefetcher::start(1000, 2, 4, move |job| {
            counter.fetch_add(1, Ordering::SeqCst);
            job
        });
        assert_eq!(prefetcher.next(), Some(Ok(0)));
        std::thread::sleep(Duration::from_millis(50));
        // Consumer is at job 1: workers may have taken jobs up to 1 + depth (+1 each waiting).
        assert!(
            started.load(Ordering::SeqCst) <= 1 + 4 + 2,
            "{}",
            started.load(Ordering::SeqCst)
        );
        drop(prefetcher);
        assert!(started.load(Ordering::SeqCst) < 20);
    }

    #[test]
    fn a_panicking_job_is_delivered_as_an_error_in_its_place() {
        // Guarded by a timeout: before, next() waited forever for the panicked job.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let results: Vec<JobResult<usize>> = Prefetcher::start(8, 3, 2, |job| {
                assert!(job != 5, "bad input in job {job}");
                job
            })
            .take(6)
            .collect();
            sender.send(results).unwrap();
        });
        let results = receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("the consumer hung on a panicked job");
        assert_eq!(results[..5], [Ok(0), Ok(1), Ok(2), Ok(3), Ok(4)]);
        assert_eq!(
            results[5],
            Err(JobPanicked {
                job: 5,
                message: "bad input in job 5".into()
            })
        );
    }
}
