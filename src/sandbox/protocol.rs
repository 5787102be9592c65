//! The framed, versioned wire format between the Rust pool and a Python worker.
//!
//! A frame is a 12-byte header (`b"UCSB"`, protocol version as u32 LE, payload length as u32
//! LE) followed by a UTF-8 JSON payload. Both sides refuse a frame with another magic, another
//! version or a length above [`MAX_FRAME`]. Reads take a deadline, so a hung worker shows up as
//! [`FrameError::Timeout`] instead of blocking the pool.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

/// Version of the protocol spoken by this crate and by the embedded `worker.py`.
pub const PROTOCOL_VERSION: u32 = 2;
/// First four bytes of every frame.
pub const MAGIC: &[u8; 4] = b"UCSB";
/// Largest payload either side accepts.
pub const MAX_FRAME: usize = 256 << 20;
const HEADER: usize = 12;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the worker closed its end of the pipe")]
    Eof,
    #[error("no frame before the deadline")]
    Timeout,
    #[error("bad frame: {0}")]
    Bad(String),
    #[error("pipe error: {0}")]
    Io(#[from] io::Error),
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, payload: &serde_json::Value) -> io::Result<()> {
    let body = serde_json::to_vec(payload).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(HEADER + body.len());
    frame.extend_from_slice(MAGIC);
    frame.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)?;
    w.flush()
}

/// Reads frames from a pipe with deadlines (poll + read on the raw descriptor).
pub struct FrameReader<R: AsRawFd> {
    source: R,
    buf: Vec<u8>,
}

impl<R: AsRawFd> FrameReader<R> {
    pub fn new(source: R) -> Self {
        FrameReader {
            source,
            buf: Vec::new(),
        }
    }

    /// Reads the next frame, waiting at most until `deadline`.
    pub fn read(&mut self, deadline: Instant) -> Result<serde_json::Value, FrameError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return serde_json::from_slice(&frame)
                    .map_err(|e| FrameError::Bad(format!("payload is not JSON: {e}")));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(FrameError::Timeout);
            }
            let wait_ms = (deadline - now).as_millis().min(i32::MAX as u128) as i32;
            if !poll_readable(self.source.as_raw_fd(), wait_ms.max(1))? {
                continue;
            }
            let mut chunk = vec![0u8; 1 << 16];
            // SAFETY: reading into a buffer we own from a descriptor owned by `source`.
            let n = unsafe {
                libc::read(
                    self.source.as_raw_fd(),
                    chunk.as_mut_ptr().cast(),
                    chunk.len(),
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted
                    || err.kind() == io::ErrorKind::WouldBlock
                {
                    continue;
                }
                return Err(FrameError::Io(err));
            }
            if n == 0 {
                return Err(FrameError::Eof);
            }
            self.buf.extend_from_slice(&chunk[..n as usize]);
        }
    }

    fn take_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        if &self.buf[..4] != MAGIC {
            return Err(FrameError::Bad("wrong magic".into()));
        }
        let version = u32::from_le_bytes(self.buf[4..8].try_into().expect("4 bytes"));
        if version != PROTOCOL_VERSION {
            return Err(FrameError::Bad(format!(
                "protocol version {version}, expected {PROTOCOL_VERSION}"
            )));
        }
        let len = u32::from_le_bytes(self.buf[8..12].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::Bad(format!(
                "frame of {len} bytes is over the limit"
            )));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let frame = self.buf[HEADER..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        Ok(Some(frame))
    }
}

fn poll_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if r < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(err);
    }
    Ok(r > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    #[test]
    fn frames_round_trip_and_bad_headers_are_refused() {
        let (mut a, b) = UnixStream::pair().unwrap();
        write_frame(&mut a, &serde_json::json!({"x": 1})).unwrap();
        write_frame(&mut a, &serde_json::json!([2])).unwrap();
        let mut r = FrameReader::new(b);
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(r.read(deadline).unwrap(), serde_json::json!({"x": 1}));
        assert_eq!(r.read(deadline).unwrap(), serde_json::json!([2]));
        assert!(matches!(
            r.read(Instant::now() + Duration::from_millis(20)),
            Err(FrameError::Timeout)
        ));
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&7u32.to_le_bytes());
        bad.extend_from_slice(&0u32.to_le_bytes());
        a.write_all(&bad).unwrap();
        assert!(matches!(r.read(deadline), Err(FrameError::Bad(m)) if m.contains("version 7")));
        drop(a);
    }
}
