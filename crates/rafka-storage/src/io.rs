//! Positional file I/O and a buffered scanner over the batches of a segment file.
//!
//! Reads use `pread`-style positional I/O so that a reader needs only a shared
//! `&File` (cloned out of the log under its lock) and never moves a file
//! cursor another thread depends on. [`BatchScanner`] walks a byte range of a
//! segment batch by batch with one reusable buffer; recovery asks it for whole
//! batches (to check CRCs), lookups only for headers.

use std::fs::File;
use std::io;

use crate::batch::BatchHeader;

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, pos)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, pos)
}

#[cfg(unix)]
fn write_at(file: &File, buf: &[u8], pos: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(file, buf, pos)
}

#[cfg(windows)]
fn write_at(file: &File, buf: &[u8], pos: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_write(file, buf, pos)
}

/// Reads into `buf` from `pos` until it is full or the file ends; returns the bytes read.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match read_at(file, &mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes all of `buf` at `pos`.
pub(crate) fn write_all_at(file: &File, mut buf: &[u8], mut pos: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match write_at(file, buf, pos) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole buffer",
                ))
            }
            Ok(n) => {
                buf = &buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes of `file` from `pos` to disk, without
/// waiting for it (Linux's `sync_file_range(SYNC_FILE_RANGE_WRITE)`): this makes no
/// promise of durability; it only keeps dirty pages from piling up. Elsewhere a no-op.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn start_writeback(file: &File, pos: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(pos), Ok(len)) = (i64::try_from(pos), i64::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: a plain syscall on a descriptor `file` keeps open; no memory is passed.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), pos, len, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn start_writeback(_file: &File, _pos: u64, _len: u64) -> io::Result<()> {
    Ok(())
}

/// Flushes a directory's entries (new, renamed, removed files) to disk.
pub(crate) fn sync_dir(dir: &std::path::Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// One step of a [`BatchScanner`].
#[derive(Debug)]
pub(crate) enum Scan<'a> {
    /// A batch starting at file position `pos`; `bytes` is the whole batch when asked for.
    Batch {
        pos: u64,
        header: BatchHeader,
        bytes: Option<&'a [u8]>,
    },
    /// Fewer bytes remain at `pos` than a header or the declared batch length.
    Incomplete { pos: u64 },
    /// The header at `pos` is malformed.
    Corrupt { pos: u64, reason: String },
    /// Exactly at the end of the range.
    End,
}

/// Walks the batches of `file` in `[start, end)` through one reusable buffer.
pub(crate) struct BatchScanner<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
    chunk: usize,
    buf: Vec<u8>,
    buf_start: u64,
    filled: usize,
}

impl<'f> BatchScanner<'f> {
    /// `chunk` is the read size; a whole batch larger than it grows the buffer.
    pub(crate) fn new(file: &'f File, start: u64, end: u64, chunk: usize) -> Self {
        BatchScanner {
            file,
            pos: start,
            end,
            chunk: chunk.max(BatchHeader::SIZE),
            buf: Vec::new(),
            buf_start: start,
            filled: 0,
        }
    }

    /// Makes `need` bytes from `self.pos` available in the buffer; false if the range or file ends first.
    fn fill(&mut self, need: usize) -> io::Result<bool> {
        if self.pos + need as u64 > self.end {
            return Ok(false);
        }
        let offset = (self.pos - self.buf_start) as usize;
        if offset <= self.filled && self.filled - offset >= need {
            return Ok(true);
        }
        // Keep what we already have from pos onward, then read more behind it.
        let kept = if offset <= self.filled {
            self.buf.copy_within(offset..self.filled, 0);
            self.filled - offset
        } else {
            0
        };
        self.buf_start = self.pos;
        self.filled = kept;
        let want = need.max(self.chunk).min((self.end - self.pos) as usize);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let n = read_full_at(
            self.file,
            &mut self.buf[self.filled..want],
            self.buf_start + self.filled as u64,
        )?;
        self.filled += n;
        Ok(self.filled >= need)
    }

    /// The next batch; with `whole` the batch bytes are returned too.
    pub(crate) fn next(&mut self, whole: bool) -> io::Result<Scan<'_>> {
        let pos = self.pos;
        if pos >= self.end {
            return Ok(Scan::End);
        }
        if !self.fill(BatchHeader::SIZE)? {
            return Ok(Scan::Incomplete { pos });
        }
        let at = (pos - self.buf_start) as usize;
        let header = match BatchHeader::parse(&self.buf[at..self.filled]) {
            Ok(h) => h,
            Err(e) => {
                return Ok(Scan::Corrupt {
                    pos,
                    reason: e.to_string(),
                })
            }
        };
        let total = header.total_size();
        if pos + total as u64 > self.end {
            return Ok(Scan::Incomplete { pos });
        }
        if whole && !self.fill(total)? {
            return Ok(Scan::Incomplete { pos });
        }
        self.pos = pos + total as u64;
        let bytes = if whole {
            let at = (pos - self.buf_start) as usize;
            Some(&self.buf[at..at + total])
        } else {
            None
        };
        Ok(Scan::Batch { pos, header, bytes })
    }
}
