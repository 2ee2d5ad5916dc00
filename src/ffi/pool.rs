//! The CPU backend's thread pool, built for many tiny parallel steps: one decoded token of a
//! 135M-parameter model is a few hundred matrix products of tens of microseconds each, so what
//! decides speed is the cost of handing out a step and waiting for it (here well under a
//! microsecond while the workers spin) rather than throughput. Workers spin on an epoch counter
//! for a while after each step and then sleep on a condition variable, so an idle runtime costs
//! no CPU.
//!
//! The `unsafe` here is the lifetime erasure every scoped pool needs: a step's closure borrows the
//! caller's buffers, workers see it through a raw pointer, and [`Pool::run`] does not return until
//! every worker has checked out of the step, so the borrow outlives every use.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Spin iterations a worker waits for the next step before it goes to sleep (about 0.1–1 ms).
const SPINS_BEFORE_SLEEP: u32 = 1 << 16;

/// Spin iterations between yields to the OS scheduler while waiting: when the machine has more
/// runnable threads than cores, the thread we wait for may need our core to finish.
const SPINS_PER_YIELD: u32 = 1 << 10;

/// One spin-wait step: a pause hint, and every [`SPINS_PER_YIELD`] steps a yield.
#[inline]
fn spin_wait(spins: u32) {
    if spins % SPINS_PER_YIELD == SPINS_PER_YIELD - 1 {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

type Job = dyn Fn(usize) + Sync;

/// The step being run: a type-erased pointer to the caller's closure and its task count.
#[derive(Clone, Copy)]
struct JobRef {
    f: *const Job,
    n_tasks: usize,
}

// SAFETY: the pointee is `Sync` (shared calls from several threads are allowed) and outlives the
// step (see `Pool::run`), so the pointer may be sent to and used from the workers.
unsafe impl Send for JobRef {}

struct Shared {
    /// Incremented once per step; workers compare it with the last step they ran.
    epoch: AtomicU64,
    /// The current step (read by workers only after seeing a new epoch).
    job: Mutex<Option<JobRef>>,
    /// Next task index to hand out.
    next: AtomicUsize,
    /// Workers that have finished the current step.
    checked_out: AtomicUsize,
    /// Workers asleep on `wake`.
    sleeping: Mutex<usize>,
    wake: Condvar,
    shutdown: AtomicBool,
    /// A task panicked during the current step.
    panicked: AtomicBool,
}

/// A fixed set of worker threads that, together with the calling thread, run the tasks of one
/// step at a time.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises steps from concurrent callers (requests on several threads).
    step: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("threads", &self.threads()).finish()
    }
}

impl Pool {
    /// Starts a pool in which `threads` threads (the caller included) run each step; `threads`
    /// of 0 or 1 runs everything on the caller.
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            next: AtomicUsize::new(0),
            checked_out: AtomicUsize::new(0),
            sleeping: Mutex::new(0),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let mut workers = Vec::new();
        for i in 1..threads.max(1) {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new().name(format!("edgellm-cpu-{i}")).spawn(move || worker(&s));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    let pool = Pool { shared, workers, step: Mutex::new(()) };
                    drop(pool);
                    return Err(e);
                }
            }
        }
        Ok(Pool { shared, workers, step: Mutex::new(()) })
    }

    /// Threads that run a step, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(0) .. f(n_tasks - 1)` spread over the pool's threads and returns when all are
    /// done. Tasks are handed out one at a time in increasing order, so uneven tasks balance.
    /// A panic in a task is re-raised here after the step has drained.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.workers.is_empty() || n_tasks == 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _step = self.step.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: only the lifetime is erased. The pointer is published for this step only and
        // this function waits below until every worker has checked out of the step (after which
        // no worker reads `job` again until the next epoch), so `f` outlives all its uses.
        let erased: *const Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f) };
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobRef { f: erased, n_tasks });
        s.next.store(0, Ordering::Relaxed);
        s.checked_out.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::Release);
        if *s.sleeping.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            s.wake.notify_all();
        }
        let caller = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_tasks(s, f, n_tasks)));
        let n_workers = self.workers.len();
        let mut spins = 0u32;
        while s.checked_out.load(Ordering::Acquire) < n_workers {
            spin_wait(spins);
            spins = spins.wrapping_add(1);
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(p) = caller {
            std::panic::resume_unwind(p);
        }
        if s.panicked.load(Ordering::Relaxed) {
            panic!("a CPU worker task panicked");
        }
    }

    /// Splits `data` into chunks of `chunk` elements (the last may be shorter) and runs
    /// `f(chunk_index, chunk)` for each on the pool, like rayon's `par_chunks_mut`.
    pub fn chunks_mut<T: Send>(&self, data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
        let chunk = chunk.max(1);
        let len = data.len();
        let n = len.div_ceil(chunk);
        let base = SendPtr(data.as_mut_ptr(), PhantomData);
        let base = &base;
        self.run(n, &|i| {
            let start = i * chunk;
            let end = (start + chunk).min(len);
            // SAFETY: task `i` is handed out exactly once per step, and chunks of distinct `i`
            // are disjoint ranges of `data`, which stays mutably borrowed for the whole `run`.
            let part = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), end - start) };
            f(i, part)
        });
    }

    /// Splits a row-major matrix `data` (`rows.len` rows of stride `ldo`, `cols.len <= ldo`
    /// columns in use) into tiles of `rows.chunk x cols.chunk` and runs `f` on each, column chunk by column
    /// chunk (tasks that share a column range run back to back, so what they share stays cached).
    pub fn tiles_mut<T: Send>(&self, data: &mut [T], ldo: usize, rows: Split, cols: Split, f: impl Fn(&mut Tile<'_, T>) + Sync) {
        let (Split { len: rows, chunk: row_chunk }, Split { len: cols, chunk: col_chunk }) = (rows, cols);
        assert!(cols <= ldo && (rows == 0 || data.len() >= (rows - 1) * ldo + cols), "tiles_mut: {rows}x{cols} (ldo {ldo}) in {}", data.len());
        let (row_chunk, col_chunk) = (row_chunk.max(1), col_chunk.max(1));
        let n_row_chunks = rows.div_ceil(row_chunk);
        let n = n_row_chunks * cols.div_ceil(col_chunk);
        let base = SendPtr(data.as_mut_ptr(), PhantomData);
        let base = &base;
        self.run(n, &|i| {
            let (ci, ri) = (i / n_row_chunks, i % n_row_chunks);
            let (r0, c0) = (ri * row_chunk, ci * col_chunk);
            let mut tile = Tile {
                ptr: base.0,
                ldo,
                rows: r0..(r0 + row_chunk).min(rows),
                cols: c0..(c0 + col_chunk).min(cols),
                _data: PhantomData,
            };
            f(&mut tile)
        });
    }
}

/// A raw pointer to the chunked slice, shareable because tasks touch disjoint parts of it.
struct SendPtr<'a, T>(*mut T, PhantomData<&'a mut [T]>);
// SAFETY: tasks only form disjoint sub-slices (see `chunks_mut`), and `T: Send`.
unsafe impl<T: Send> Sync for SendPtr<'_, T> {}

/// How one dimension of a matrix is cut for [`Pool::tiles_mut`]: `len` indices in chunks of
/// `chunk` (the last may be shorter).
#[derive(Clone, Copy, Debug)]
pub struct Split {
    /// Number of rows (or columns).
    pub len: usize,
    /// Rows (or columns) per tile.
    pub chunk: usize,
}

/// One task's tile of a matrix split by [`Pool::tiles_mut`]: its rows and columns, and mutable
/// access to its part of each row.
pub struct Tile<'a, T> {
    ptr: *mut T,
    ldo: usize,
    /// Rows of the tile.
    pub rows: std::ops::Range<usize>,
    /// Columns of the tile.
    pub cols: std::ops::Range<usize>,
    _data: PhantomData<&'a mut [T]>,
}

impl<T> Tile<'_, T> {
    /// The tile's columns of row `r` (one of `self.rows`).
    pub fn row_mut(&mut self, r: usize) -> &mut [T] {
        assert!(self.rows.contains(&r), "row {r} outside tile rows {:?}", self.rows);
        // SAFETY: tiles of one `tiles_mut` call are disjoint (each task gets one row chunk and one
        // column chunk exactly once), `tiles_mut` checked that every (row, column) of the matrix
        // lies inside `data`, and the returned slice borrows the tile mutably, so it cannot alias
        // another slice of this tile.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r * self.ldo + self.cols.start), self.cols.len()) }
    }
}

fn run_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync + '_), n_tasks: usize) {
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n_tasks {
            break;
        }
        f(i);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        let epoch = loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen || s.shutdown.load(Ordering::Relaxed) {
                break e;
            }
            if spins < SPINS_BEFORE_SLEEP {
                spin_wait(spins);
                spins += 1;
                continue;
            }
            let mut sleeping = s.sleeping.lock().unwrap_or_else(|e| e.into_inner());
            *sleeping += 1;
            while s.epoch.load(Ordering::Acquire) == seen && !s.shutdown.load(Ordering::Relaxed) {
                sleeping = s.wake.wait(sleeping).unwrap_or_else(|e| e.into_inner());
            }
            *sleeping -= 1;
            spins = 0;
        };
        if s.shutdown.load(Ordering::Relaxed) {
            return;
        }
        seen = epoch;
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = job {
            // SAFETY: `Pool::run` keeps the closure alive until this worker checks out below.
            let f = unsafe { &*job.f };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_tasks(s, f, job.n_tasks))).is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.checked_out.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        {
            let _g = self.shared.sleeping.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_per_step() {
        let pool = Pool::new(3).unwrap();
        for n in [1usize, 2, 7, 100] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn chunks_cover_the_slice_exactly() {
        let pool = Pool::new(2).unwrap();
        let mut v = vec![0usize; 1001];
        for _ in 0..50 {
            pool.chunks_mut(&mut v, 64, |c, part| part.iter_mut().enumerate().for_each(|(j, x)| *x += c * 64 + j));
        }
        assert!(v.iter().enumerate().all(|(i, &x)| x == 50 * i));
    }

    #[test]
    fn sleeping_workers_wake_for_the_next_step() {
        let pool = Pool::new(2).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let count = AtomicUsize::new(0);
        pool.run(64, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 64);
    }

    #[test]
    fn a_panicking_task_is_reported_and_the_pool_survives() {
        let pool = Pool::new(2).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(8, &|i| {
                if i == 5 {
                    panic!("task 5");
                }
            })
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.run(8, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn concurrent_callers_share_the_pool() {
        let pool = Pool::new(2).unwrap();
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for _ in 0..200 {
                        let count = AtomicUsize::new(0);
                        pool.run(5, &|_| {
                            count.fetch_add(1, Ordering::Relaxed);
                        });
                        assert_eq!(count.load(Ordering::Relaxed), 5);
                    }
                });
            }
        });
    }

    #[test]
    fn tiles_cover_the_matrix_once_and_leave_the_stride_padding_alone() {
        let pool = Pool::new(2).unwrap();
        let (rows, cols, ldo) = (13usize, 37usize, 40usize);
        let mut m = vec![0u32; rows * ldo];
        pool.tiles_mut(&mut m, ldo, Split { len: rows, chunk: 4 }, Split { len: cols, chunk: 8 }, |t| {
            for r in t.rows.clone() {
                let c0 = t.cols.start;
                t.row_mut(r).iter_mut().enumerate().for_each(|(j, v)| *v += (r * 1000 + c0 + j) as u32);
            }
        });
        for r in 0..rows {
            for c in 0..ldo {
                let want = if c < cols { (r * 1000 + c) as u32 } else { 0 };
                assert_eq!(m[r * ldo + c], want, "({r},{c})");
            }
        }
    }
}
