//! The XDP program's sample ring buffer: opening the pinned map, splitting a
//! record into its header and payload, and a reader task that hands each
//! record to a callback as it arrives. What a payload means is the caller's
//! business (`detect::sip` parses it).

use aya::maps::{Map, MapData, RingBuf};
use sip_xdp_common::maps::{SampleHeader, MAP_SAMPLES};
use tokio::io::unix::AsyncFd;

use super::pins::Pins;
use crate::{Error, Result};

/// Splits a ring-buffer record into its header and the captured payload
/// bytes; `None` if it is too short to hold a header.
pub fn split(record: &[u8]) -> Option<(SampleHeader, &[u8])> {
    let hlen = std::mem::size_of::<SampleHeader>();
    if record.len() < hlen {
        return None;
    }
    // SAFETY: SampleHeader is plain old data and `record` holds at least
    // its size; read_unaligned copes with any alignment.
    let h: SampleHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let cap = usize::from(h.cap_len).min(record.len() - hlen);
    Some((h, &record[hlen..hlen + cap]))
}

/// A ring-buffer record as the kernel writes it: the inverse of `split`,
/// for tests and benchmarks.
pub fn encode(h: &SampleHeader, payload: &[u8]) -> Vec<u8> {
    // SAFETY: SampleHeader is plain old data with explicit padding.
    let head = unsafe {
        std::slice::from_raw_parts(
            h as *const SampleHeader as *const u8,
            std::mem::size_of::<SampleHeader>(),
        )
    };
    [head, payload].concat()
}

pub fn open_ring(pins: &Pins) -> Result<RingBuf<MapData>> {
    let data = MapData::from_pin(pins.map(MAP_SAMPLES))
        .map_err(Error::map("opening the sample ring buffer"))?;
    RingBuf::try_from(Map::RingBuf(data)).map_err(Error::map("opening the sample ring buffer"))
}

/// Reads the ring until `on_record` returns false, calling it with every
/// record as soon as the kernel commits it. The callback runs on the reader
/// task, off the controller's loop; it must not block, or the kernel fills
/// the ring and loses samples.
pub fn spawn_reader(
    ring: RingBuf<MapData>,
    mut on_record: impl FnMut(&[u8]) -> bool + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>> {
    // SAFETY: the RingBuf owns its map fd and keeps it open until it is
    // dropped, which only happens with the AsyncFd.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| Error::Io {
            context: "watching the sample ring buffer".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok(tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::error!(error = %e, "sample ring buffer: stopped reading");
                    return;
                }
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if !on_record(&item) {
                    return;
                }
            }
            guard.clear_ready();
        }
    }))
}
