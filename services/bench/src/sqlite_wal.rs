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
    /// How many of the slow requests would overlap a checkpoint by chance: for each, the
    /// share of the window's start times at which an interval of its length meets one.
    pub slow_by_chance: f64,
}

/// The share of start times in `[from, to - len]` at which an interval of length `len`
/// meets one of `checkpoints` (each widened by a poll on both sides).
fn chance_of_overlap(checkpoints: &[Checkpoint], from: Instant, to: Instant, len: Duration) -> f64 {
    let Some(last_start) = to.checked_sub(len).filter(|t| *t > from) else {
        return 1.0;
    };
    let span = (last_start - from).as_secs_f64();
    // Start times that meet checkpoint c: [c.started - len - POLL, c.ended + POLL].
    let mut hits: Vec<(f64, f64)> = checkpoints
        .iter()
        .map(|c| {
            let lo =
                (c.started.checked_sub(len + POLL).unwrap_or(from).max(from) - from).as_secs_f64();
            let hi = ((c.ended + POLL).min(last_start).max(from) - from).as_secs_f64();
            (lo, hi)
        })
        .filter(|(lo, hi)| hi > lo)
        .collect();
    hits.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut covered = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (lo, hi) in hits {
        match current {
            Some((a, b)) if lo <= b => current = Some((a, b.max(hi))),
            Some((a, b)) => {
                covered += b - a;
                current = Some((lo, hi));
            }
            None => current = Some((lo, hi)),
        }
    }
    if let Some((a, b)) = current {
        covered += b - a;
    }
    (covered / span).min(1.0)
}

/// `requests`: (start, latency) of each request of the window.
pub fn explain(
    (checkpoints, wal_file_bytes): &(Vec<Checkpoint>, u64),
    requests: &[(Instant, Duration)],
    threshold: Duration,
) -> Stalls {
    let slow: Vec<_> = requests.iter().filter(|(_, l)| *l > threshold).collect();
    let from = requests.iter().map(|(s, _)| *s).min();
    let to = requests.iter().map(|(s, l)| *s + *l).max();
    let slow_by_chance = match (from, to) {
        (Some(from), Some(to)) => slow
            .iter()
            .map(|(_, l)| chance_of_overlap(checkpoints, from, to, *l))
            .fold(0.0, |a, b| a + b),
        _ => 0.0,
    };
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
        slow_by_chance,
    }
}

impl std::fmt::Display for Stalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} checkpoints during the window ({} WAL frames copied back), longest {:.1} ms, \
             {:.1} ms in all; WAL file {:.1} MiB at the end; {} requests took over 50 ms, {} of \
             them while a checkpoint ran ({:.0} would by chance)",
            self.checkpoints,
            self.frames,
            self.longest_ms,
            self.total_ms,
            self.wal_file_bytes as f64 / 1_048_576.0,
            self.slow,
            self.slow_during_checkpoint,
            self.slow_by_chance
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chance_of_meeting_a_checkpoint() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let window = t0 + ms(1000);
        // No checkpoint: never.
        assert_eq!(chance_of_overlap(&[], t0, window, ms(50)), 0.0);
        // One 10 ms checkpoint in the middle: start times within 50 + 10 + 2 polls of it meet.
        let one = [Checkpoint {
            started: t0 + ms(500),
            ended: t0 + ms(510),
            frames: 1,
        }];
        let p = chance_of_overlap(&one, t0, window, ms(50));
        assert!((p - 62.0 / 950.0).abs() < 0.002, "{p}");
        // Checkpoints every 40 ms: a 50 ms request always meets one.
        let many: Vec<Checkpoint> = (0..25)
            .map(|i| Checkpoint {
                started: t0 + ms(i * 40),
                ended: t0 + ms(i * 40 + 2),
                frames: 1,
            })
            .collect();
        assert_eq!(chance_of_overlap(&many, t0, window, ms(50)), 1.0);
    }
}
