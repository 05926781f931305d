//! The enclave link's frame codec: what the parent and the enclave exchange over vsock (a Unix socket locally).
//!
//! A frame is a 4-byte big-endian length `L`, then `L` bytes of deterministic CBOR:
//! `[version: uint, request_id: uint, kind: uint, body: bstr]`. The length is checked against
//! [`MAX_FRAME_LEN`] *before* a reader allocates anything for the body, so a peer that announces 4 GiB costs four
//! bytes of reading. `request_id` lets many requests share one connection; `kind` says how to read `body`.

use crate::Error;
use pod_cbor::{Decoder, Encoder, Len};

/// The only version this code speaks.
pub const VERSION: u64 = 1;
/// Length of the prefix.
pub const PREFIX_LEN: usize = 4;
/// Largest CBOR part of a frame: a sealed 64 KiB chunk with its envelope fits several times over, and control
/// messages are far smaller.
pub const MAX_FRAME_LEN: usize = 256 * 1024;

/// A decoded frame, borrowing its body from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Correlates a response (and stream chunks) with its request.
    pub request_id: u64,
    /// What the body is; the enclave protocol assigns the numbers.
    pub kind: u64,
    /// The payload.
    pub body: &'a [u8],
}

/// Encodes a frame, prefix included.
pub fn encode(frame: &Frame<'_>) -> Result<Vec<u8>, Error> {
    let mut e = Encoder::new();
    e.array(4)
        .u64(VERSION)
        .u64(frame.request_id)
        .u64(frame.kind)
        .bytes(frame.body);
    let cbor = e.into_bytes();
    if cbor.len() > MAX_FRAME_LEN {
        return Err(Error::FrameTooLarge {
            len: cbor.len() as u64,
            max: MAX_FRAME_LEN,
        });
    }
    let len = u32::try_from(cbor.len()).map_err(|_| Error::FrameTooLarge {
        len: cbor.len() as u64,
        max: MAX_FRAME_LEN,
    })?;
    let mut out = Vec::with_capacity(PREFIX_LEN + cbor.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&cbor);
    Ok(out)
}

/// Reads the prefix: how many bytes of CBOR follow. Fails before any allocation when it is too large or zero.
pub fn body_len(prefix: [u8; PREFIX_LEN]) -> Result<usize, Error> {
    let len = u32::from_be_bytes(prefix);
    let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
    if len_usize > MAX_FRAME_LEN {
        return Err(Error::FrameTooLarge {
            len: u64::from(len),
            max: MAX_FRAME_LEN,
        });
    }
    if len == 0 {
        return Err(Error::MalformedFrame("empty frame"));
    }
    Ok(len_usize)
}

/// Parses the CBOR part of a frame (the `body_len` bytes after the prefix).
pub fn parse(cbor: &[u8]) -> Result<Frame<'_>, Error> {
    if cbor.len() > MAX_FRAME_LEN {
        return Err(Error::FrameTooLarge {
            len: cbor.len() as u64,
            max: MAX_FRAME_LEN,
        });
    }
    let bad = |_| Error::MalformedFrame("not a [version, request_id, kind, body] array");
    let mut d = Decoder::new(cbor);
    if d.array().map_err(bad)? != Len::Definite(4) {
        return Err(Error::MalformedFrame("frame is not a four-element array"));
    }
    let version = d.u64().map_err(bad)?;
    if version != VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    let request_id = d.u64().map_err(bad)?;
    let kind = d.u64().map_err(bad)?;
    let body = d.bytes().map_err(bad)?;
    d.finish()
        .map_err(|_| Error::MalformedFrame("trailing bytes after the frame"))?;
    Ok(Frame {
        request_id,
        kind,
        body,
    })
}

/// Splits one whole frame off the front of `buf`: `Ok(None)` when more bytes are needed, else the frame and the
/// number of bytes it used. For readers that buffer a byte stream.
pub fn split(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, Error> {
    let Some(prefix) = buf.get(..PREFIX_LEN) else {
        return Ok(None);
    };
    let mut p = [0u8; PREFIX_LEN];
    p.copy_from_slice(prefix);
    let len = body_len(p)?;
    let end = PREFIX_LEN.saturating_add(len);
    match buf.get(PREFIX_LEN..end) {
        Some(cbor) => Ok(Some((parse(cbor)?, end))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_split() {
        let f = Frame {
            request_id: 42,
            kind: 3,
            body: b"hello",
        };
        let bytes = encode(&f).unwrap();
        assert_eq!(split(&bytes).unwrap(), Some((f, bytes.len())));
        assert_eq!(split(&bytes[..bytes.len() - 1]).unwrap(), None);
        assert_eq!(split(&bytes[..2]).unwrap(), None);
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        let (first, used) = split(&two).unwrap().unwrap();
        assert_eq!(first, f);
        assert_eq!(split(&two[used..]).unwrap(), Some((f, bytes.len())));
    }

    #[test]
    fn limits_are_checked_before_allocation() {
        assert!(matches!(
            body_len([0xff, 0xff, 0xff, 0xff]),
            Err(Error::FrameTooLarge { .. })
        ));
        assert!(matches!(
            body_len([0, 0, 0, 0]),
            Err(Error::MalformedFrame(_))
        ));
        let body = vec![0u8; MAX_FRAME_LEN];
        assert!(matches!(
            encode(&Frame {
                request_id: 1,
                kind: 1,
                body: &body
            }),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn malformed_frames_are_refused() {
        let good = encode(&Frame {
            request_id: 1,
            kind: 2,
            body: b"x",
        })
        .unwrap();
        let cbor = &good[PREFIX_LEN..];
        let mut v2 = cbor.to_vec();
        v2[1] = 0x02;
        assert_eq!(parse(&v2), Err(Error::UnsupportedVersion(2)));
        let mut trailing = cbor.to_vec();
        trailing.push(0);
        assert!(matches!(parse(&trailing), Err(Error::MalformedFrame(_))));
        assert!(matches!(
            parse(&[0x83, 1, 1, 1]),
            Err(Error::MalformedFrame(_))
        ));
        assert!(matches!(
            parse(&[0x84, 1, 1, 1, 1]),
            Err(Error::MalformedFrame(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = split(&input);
            let _ = parse(&input);
        }

        #[test]
        fn any_frame_round_trips(id in proptest::prelude::any::<u64>(), kind in proptest::prelude::any::<u64>(),
                                 body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let f = Frame { request_id: id, kind, body: &body };
            let bytes = encode(&f).unwrap();
            proptest::prop_assert_eq!(split(&bytes).unwrap(), Some((f, bytes.len())));
        }
    }
}
