//! Watches SQLite's checkpoints from outside the server, without running any (a
//! `PRAGMA wal_checkpoint` would itself checkpoint).
//!
//! The wal-index (`<db>-shm`, native byte order) holds, after two 48-byte copies of the
//! index header (`mxFrame` at offset 16), the checkpoint info: `nBackfill` at offset 96 (frames
//! copied into the database, set when a checkpoint has copied and synced them) and
//! `nBackfillAttempted` at offset 128 (set when a checkpoint starts copying). A thread polls
//! them every `POLL`: a checkpoint runs from the poll that sees `nBackfillAttempted` grow to
//! the one that sees `nBackfill` reach it, so its duration is known to about two polls.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(1);

/// One checkpoint seen from outside.
#[derive(Clone, Copy, Debug)]
pub struct Checkpoint {
    pub started: Instant,
    pub ended: Instant,
    pub frames: u32,
}

pub struct WalWatch {
    wal: PathBuf,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Checkpoint>>,
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn read_info(file: &mut std::fs::File, buf: &mut [u8; 136]) -> Option<(u32, u32)> {
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_exact(buf).ok()?;
    Some((read_u32(buf, 96), read_u32(buf, 128)))
}

impl WalWatch {
    /// Starts watching the database file `db` (its `-shm` file must exist: the server has
    /// opened it).
    pub fn start(db: &Path) -> anyhow::Result<WalWatch> {
        let mut shm = PathBuf::from(db).into_os_string();
        shm.push("-shm");
        let mut wal = PathBuf::from(db).into_os_string();
        wal.push("-wal");
        let mut file = std::fs::File::open(&shm)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 136];
            let mut seen = Vec::new();
            let (mut backfill, mut attempted) = read_info(&mut file, &mut buf).unwrap_or((0, 0));
            let mut open: Option<(Instant, u32)> = None;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(POLL);
                let Some((b, a)) = read_info(&mut file, &mut buf) else {
                    continue;
                };
                let now = Instant::now();
                if a > attempted && b < a && open.is_none() {
                    open = Some((now, backfill));
                }
                if b > backfill {
                    let (started, from) = open.take().unwrap_or((now, backfill));
                    seen.push(Checkpoint {
                        started,
                        ended: now,
                        frames: b - from,
                    });
                } else if b < backfill {
                    // The WAL was restarted from its beginning after a complete checkpoint.
                    open = None;
                }
                backfill = b;
                attempted = a;
            }
            seen
        });
        Ok(WalWatch {
            wal: wal.into(),
            stop,
            thread,
        })
    }

    /// The checkpoints seen, and the size of the WAL file at the end (bytes).
    pub fn finish(self) -> (Vec<Checkpoint>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let size = std::fs::metadata(&self.wal).map(|m| m.len()).unwrap_or(0);
        (self.thread.join().unwrap_or_default(), size)
    }
}

/// What the checkpoints of a window explain of its slow requests.
pub struct Stalls {
    pub checkpoints: usize,
    /// Size of the WAL file at the end of the window (it grows while checkpoints cannot
    /// finish, e.g. with readers in the way).
    pub wal_file_bytes: u64,
    pub frames: u64,
    pub longest_ms: f64,
    pub total_ms: f64,
    /// Requests slower than `threshold`, and how many of them overlapped a checkpoint.
    pub slow: usize,
    pub slow_during_checkpoint: usize,
}

/// `requests`: (start, latency) of each request of the window.
pub fn explain(
    (checkpoints, wal_file_bytes): &(Vec<Checkpoint>, u64),
    requests: &[(Instant, Duration)],
    threshold: Duration,
) -> Stalls {
    let slow: Vec<_> = requests.iter().filter(|(_, l)| *l > threshold).collect();
    let overlapping = slow
        .iter()
        .filter(|(start, l)| {
            let end = *start + *l;
            // A checkpoint is known to about one poll on each side.
            checkpoints
                .iter()
                .any(|c| c.started <= end + POLL && c.ended + POLL >= *start)
        })
        .count();
    let ms = |c: &Checkpoint| (c.ended - c.started).as_secs_f64() * 1000.0;
    Stalls {
        checkpoints: checkpoints.len(),
        wal_file_bytes: *wal_file_bytes,
        frames: checkpoints.iter().map(|c| c.frames as u64).sum(),
        longest_ms: checkpoints.iter().map(ms).fold(0.0, f64::max),
        total_ms: checkpoints.iter().map(ms).fold(0.0, |a, b| a + b),
        slow: slow.len(),
        slow_during_checkpoint: overlapping,
    }
}

impl std::fmt::Display for Stalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} checkpoints during the window ({} WAL frames copied back), longest {:.1} ms, \
             {:.1} ms in all; WAL file {:.1} MiB at the end; {} requests took over 50 ms, {} of \
             them while a checkpoint ran",
            self.checkpoints,
            self.frames,
            self.longest_ms,
            self.total_ms,
            self.wal_file_bytes as f64 / 1_048_576.0,
            self.slow,
            self.slow_during_checkpoint
        )
    }
}
