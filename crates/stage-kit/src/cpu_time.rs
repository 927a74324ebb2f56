//! CPU time read from Linux's `/proc`, for benchmarks: unlike wall time, other work on a busy
//! machine does not inflate it (except where the measured threads themselves spin-wait).

/// User plus system CPU seconds of this process (all threads), from `/proc/self/stat` in
/// clock ticks of 1/100 s (Linux's fixed USER_HZ); NaN elsewhere.
pub fn process_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name: state is the first, utime the 12th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

/// CPU seconds of the calling thread (`/proc/thread-self/schedstat`, nanoseconds); `None`
/// where it cannot be read.
pub fn thread_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns * 1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let (process, thread) = (process_seconds(), thread_seconds().unwrap());
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed().as_millis() < 50 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        assert!(thread_seconds().unwrap() > thread);
        assert!(process_seconds() >= process);
    }
}
