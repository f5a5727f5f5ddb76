//! This machine's own limits, measured in the same run as the cluster figures so
//! that each result can be read as a ratio to what the hardware allowed at the time:
//! sequential writes to the data directory's filesystem (page cache only, and with
//! an fdatasync after every chunk), the latency of one small append + fdatasync,
//! loopback TCP throughput, memcpy bandwidth, and rewriting page-cache pages that are
//! already there. A growing log always writes new pages; the gap between the first
//! write and the rewrite is what a new page costs (on a VM whose hypervisor takes the
//! guest's free pages back, a fault on the host too).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

/// How much each probe moves; `quick` runs are a smoke test, not a measurement.
#[derive(Debug, Clone, Copy)]
pub struct LimitSizes {
    pub seq_write_bytes: usize,
    pub synced_write_bytes: usize,
    pub fdatasync_samples: usize,
    pub loopback_bytes: usize,
    pub memcpy_bytes: usize,
    pub rewrite_bytes: usize,
}

impl LimitSizes {
    pub fn new(quick: bool) -> LimitSizes {
        if quick {
            LimitSizes {
                seq_write_bytes: 64 << 20,
                synced_write_bytes: 16 << 20,
                fdatasync_samples: 50,
                loopback_bytes: 256 << 20,
                memcpy_bytes: 1 << 30,
                rewrite_bytes: 64 << 20,
            }
        } else {
            LimitSizes {
                seq_write_bytes: 1 << 30,
                synced_write_bytes: 256 << 20,
                fdatasync_samples: 500,
                loopback_bytes: 4 << 30,
                memcpy_bytes: 16 << 30,
                rewrite_bytes: 256 << 20,
            }
        }
    }
}

/// The measured limits.
#[derive(Debug, Clone, Copy)]
pub struct MachineLimits {
    /// Sequential 1 MiB writes into the page cache, MB/s (no sync at all).
    pub seq_write_mb_s: f64,
    /// Sequential 1 MiB writes each followed by fdatasync, MB/s.
    pub synced_write_mb_s: f64,
    /// One 4 KiB append + fdatasync: median and 99th percentile, microseconds.
    pub fdatasync_p50_us: f64,
    pub fdatasync_p99_us: f64,
    /// One TCP stream over 127.0.0.1, 256 KiB writes, MB/s.
    pub loopback_mb_s: f64,
    /// `copy_from_slice` of 64 MiB buffers, MB/s.
    pub memcpy_mb_s: f64,
    /// Sequential 1 MiB writes over page-cache pages of the same file already
    /// written (no new pages), MB/s.
    pub rewrite_mb_s: f64,
}

const MB: f64 = 1_000_000.0;
const CHUNK: usize = 1 << 20;

pub fn measure(data_dir: &Path, sizes: LimitSizes) -> anyhow::Result<MachineLimits> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let seq_write_mb_s = sequential_write(data_dir, sizes.seq_write_bytes, false)?;
    let synced_write_mb_s = sequential_write(data_dir, sizes.synced_write_bytes, true)?;
    let (fdatasync_p50_us, fdatasync_p99_us) = fdatasync_latency(data_dir, sizes.fdatasync_samples)?;
    let loopback_mb_s = loopback_tcp(sizes.loopback_bytes)?;
    let memcpy_mb_s = memcpy(sizes.memcpy_bytes);
    let rewrite_mb_s = page_cache_rewrite(data_dir, sizes.rewrite_bytes)?;
    Ok(MachineLimits {
        seq_write_mb_s,
        synced_write_mb_s,
        fdatasync_p50_us,
        fdatasync_p99_us,
        loopback_mb_s,
        memcpy_mb_s,
        rewrite_mb_s,
    })
}

fn scratch_file(dir: &Path, name: &str) -> anyhow::Result<(File, std::path::PathBuf)> {
    let path = dir.join(name);
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok((file, path))
}

/// Writes `total` bytes in 1 MiB chunks; with `sync`, fdatasync after each chunk.
fn sequential_write(dir: &Path, total: usize, sync: bool) -> anyhow::Result<f64> {
    let (mut file, path) = scratch_file(dir, ".rafka-bench-seq-write")?;
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 31 % 251) as u8).collect();
    let chunks = total.div_ceil(CHUNK).max(1);
    let start = Instant::now();
    for _ in 0..chunks {
        file.write_all(&chunk).with_context(|| format!("writing {}", path.display()))?;
        if sync {
            file.sync_data().with_context(|| format!("syncing {}", path.display()))?;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok((chunks * CHUNK) as f64 / MB / secs)
}

/// The latency of appending 4 KiB and fdatasync-ing it, `samples` times.
fn fdatasync_latency(dir: &Path, samples: usize) -> anyhow::Result<(f64, f64)> {
    let (mut file, path) = scratch_file(dir, ".rafka-bench-fdatasync")?;
    let mut micros = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        micros.push(append_and_sync(&mut file, &path)?);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    micros.sort_by(f64::total_cmp);
    Ok((quantile(&micros, 0.5), quantile(&micros, 0.99)))
}

/// Appends one 4 KiB block to `file` and fdatasyncs it: how long that took, µs.
fn append_and_sync(file: &mut File, path: &Path) -> anyhow::Result<f64> {
    let start = Instant::now();
    file.write_all(&[0x5au8; 4096]).with_context(|| format!("writing {}", path.display()))?;
    file.sync_data().with_context(|| format!("syncing {}", path.display()))?;
    Ok(start.elapsed().as_secs_f64() * 1e6)
}

/// The fdatasync probe run beside a load: every [`FdatasyncProbe::EVERY`] it appends
/// 4 KiB to a scratch file in the data directory's filesystem and fdatasyncs it, so
/// the latency the brokers' own fsyncs met can be read beside the idle figure.
pub struct FdatasyncProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<Vec<f64>>>,
}

impl FdatasyncProbe {
    /// Often enough for a p99 within seconds; rarely enough to add little load.
    const EVERY: Duration = Duration::from_millis(20);

    pub fn start(dir: &Path) -> anyhow::Result<FdatasyncProbe> {
        let (mut file, path) = scratch_file(dir, ".rafka-bench-fdatasync-probe")?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut micros = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    let tick = Instant::now();
                    micros.push(append_and_sync(&mut file, &path)?);
                    std::thread::sleep(Self::EVERY.saturating_sub(tick.elapsed()));
                }
                drop(file);
                let _ = std::fs::remove_file(&path);
                Ok(micros)
            })
        };
        Ok(FdatasyncProbe { stop, thread })
    }

    /// Stops the probe: its latencies (µs), in the order taken.
    pub fn finish(self) -> anyhow::Result<Vec<f64>> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().map_err(|_| anyhow::anyhow!("the fdatasync probe panicked"))?
    }
}

/// The value at quantile `q` of sorted `values`.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// One TCP stream over loopback: a reader thread drains what the writer sends.
fn loopback_tcp(total: usize) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback socket")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 << 10];
        let mut received = 0;
        loop {
            match stream.read(&mut buf)? {
                0 => return Ok(received),
                n => received += n,
            }
        }
    });
    let mut stream = TcpStream::connect(addr).context("cannot connect over loopback")?;
    let chunk = vec![0xa5u8; 256 << 10];
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        stream.write_all(&chunk)?;
        sent += chunk.len();
    }
    drop(stream);
    let received = reader.join().map_err(|_| anyhow::anyhow!("loopback reader panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(received == sent, "loopback: sent {sent} bytes, received {received}");
    Ok(received as f64 / MB / secs)
}

/// Copies a 64 MiB buffer until `total` bytes have moved.
fn memcpy(total: usize) -> f64 {
    const BUF: usize = 64 << 20;
    let src: Vec<u8> = (0..BUF).map(|i| i as u8).collect();
    let mut dst = vec![0u8; BUF];
    // Fault the pages in before timing.
    dst.copy_from_slice(&src);
    let rounds = (total / BUF).max(1);
    let start = Instant::now();
    for _ in 0..rounds {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    let secs = start.elapsed().as_secs_f64().max(Duration::from_nanos(1).as_secs_f64());
    (rounds * BUF) as f64 / MB / secs
}

/// Writes `total` bytes into a new file, then times writing them again from the
/// start: the same pages, already in the page cache.
fn page_cache_rewrite(dir: &Path, total: usize) -> anyhow::Result<f64> {
    use std::io::{Seek, SeekFrom};
    let (mut file, path) = scratch_file(dir, ".rafka-bench-rewrite")?;
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 17 % 253) as u8).collect();
    let chunks = total.div_ceil(CHUNK).max(1);
    let write_all = |file: &mut File| -> anyhow::Result<()> {
        for _ in 0..chunks {
            file.write_all(&chunk).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    };
    write_all(&mut file)?;
    file.seek(SeekFrom::Start(0))?;
    let start = Instant::now();
    write_all(&mut file)?;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok((chunks * CHUNK) as f64 / MB / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_from_sorted_values() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.0), 1.0);
        assert_eq!(quantile(&values, 0.5), 51.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&values, 1.0), 100.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn every_probe_measures_something() {
        let dir = std::env::temp_dir().join(format!("rafka-bench-limits-{}", std::process::id()));
        let sizes = LimitSizes {
            seq_write_bytes: 4 << 20,
            synced_write_bytes: 2 << 20,
            fdatasync_samples: 5,
            loopback_bytes: 8 << 20,
            memcpy_bytes: 64 << 20,
            rewrite_bytes: 4 << 20,
        };
        let limits = measure(&dir, sizes).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        for value in [
            limits.seq_write_mb_s,
            limits.synced_write_mb_s,
            limits.fdatasync_p50_us,
            limits.loopback_mb_s,
            limits.memcpy_mb_s,
            limits.rewrite_mb_s,
        ] {
            assert!(value.is_finite() && value > 0.0, "{limits:?}");
        }
        assert!(limits.fdatasync_p99_us >= limits.fdatasync_p50_us);
    }
}
