//! Length-prefixed JSON frames: the wire format between tack and its agent
//! on another host.
//!
//! A frame is a `u32` big-endian length and that many bytes of JSON. The
//! length comes first so a reader knows where a message ends without
//! scanning for a delimiter, and a truncated stream (ssh dropped the
//! connection) shows as a truncated frame rather than as bad JSON. A length
//! above [`MAX_FRAME`] is refused before anything is allocated: a stray
//! byte on the channel must not make the reader reserve gigabytes.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest frame either side accepts: more than any plan or blob batch
/// the protocol sends, far less than a mistaken length would ask for.
pub const MAX_FRAME: u32 = 256 * 1024 * 1024;

/// Writes `value` as one frame and flushes, so the other side sees it now.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, value: &T) -> io::Result<()> {
    let json = serde_json::to_vec(value).map_err(io::Error::other)?;
    write_raw(w, &json)?;
    w.flush()
}

/// Reads one frame: `None` when the stream ends cleanly before a frame,
/// an error for a frame cut short, a length above [`MAX_FRAME`] or JSON
/// that is not a `T`, each saying which.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> io::Result<Option<T>> {
    let mut header = [0u8; 4];
    let got = read_up_to(r, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < header.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("truncated frame: the stream ended after {got} of 4 length bytes"),
        ));
    }
    let length = u32::from_be_bytes(header);
    if length > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {length} is above the limit of {MAX_FRAME}"),
        ));
    }
    let mut body = vec![0u8; length as usize];
    let got = read_up_to(r, &mut body)?;
    if got < body.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("truncated frame: the stream ended after {got} of {length} bytes"),
        ));
    }
    serde_json::from_slice(&body).map(Some).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad JSON in a frame of {length} bytes: {error}"),
        )
    })
}

/// Writes `bytes` as one frame as they are (file contents: JSON would
/// quadruple them), without flushing: a batch is flushed by its last frame.
pub fn write_raw<W: Write>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    let length = u32::try_from(bytes.len())
        .ok()
        .filter(|length| *length <= MAX_FRAME)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a frame of {} bytes is above the limit of {MAX_FRAME}",
                    bytes.len()
                ),
            )
        })?;
    w.write_all(&length.to_be_bytes())?;
    w.write_all(bytes)
}

/// Reads one frame written by [`write_raw`]; the end of the stream is an
/// error, since a raw frame is always announced by a JSON one.
pub fn read_raw<R: Read>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    if read_up_to(r, &mut header)? < header.len() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let length = u32::from_be_bytes(header);
    if length > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {length} is above the limit of {MAX_FRAME}"),
        ));
    }
    let mut body = vec![0u8; length as usize];
    if read_up_to(r, &mut body)? < body.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("truncated frame of {length} bytes"),
        ));
    }
    Ok(body)
}

/// Fills `buffer` as far as the stream goes; returns how many bytes it got
/// (less than asked only at the end of the stream).
fn read_up_to<R: Read>(r: &mut R, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match r.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Message {
        text: String,
        number: u64,
    }

    fn message() -> Message {
        Message {
            text: "hello".to_string(),
            number: 7,
        }
    }

    #[test]
    fn frames_round_trip_in_order() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &message()).unwrap();
        write_frame(&mut wire, &"second").unwrap();
        let mut reader = wire.as_slice();
        let first: Option<Message> = read_frame(&mut reader).unwrap();
        assert_eq!(first, Some(message()));
        let second: Option<String> = read_frame(&mut reader).unwrap();
        assert_eq!(second.as_deref(), Some("second"));
        let end: Option<String> = read_frame(&mut reader).unwrap();
        assert_eq!(end, None);
    }

    #[test]
    fn the_length_is_big_endian_and_counts_the_json() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &"ab").unwrap();
        assert_eq!(wire, b"\0\0\0\x04\"ab\"");
    }

    #[test]
    fn a_stream_cut_inside_the_length_is_truncated() {
        let error = read_frame::<_, String>(&mut &b"\0\0"[..]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(error.to_string().contains("truncated frame"), "{error}");
    }

    #[test]
    fn a_stream_cut_inside_the_body_is_truncated() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &message()).unwrap();
        wire.truncate(wire.len() - 3);
        let error = read_frame::<_, Message>(&mut wire.as_slice()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(error.to_string().contains("truncated frame"), "{error}");
    }

    #[test]
    fn a_length_above_the_limit_is_refused_without_reading_on() {
        let mut wire = (MAX_FRAME + 1).to_be_bytes().to_vec();
        wire.extend_from_slice(b"{}");
        let error = read_frame::<_, Message>(&mut wire.as_slice()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("above the limit"), "{error}");
    }

    #[test]
    fn json_that_is_not_the_type_is_bad_json() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &"not a message").unwrap();
        let error = read_frame::<_, Message>(&mut wire.as_slice()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("bad JSON"), "{error}");

        let mut wire = 3u32.to_be_bytes().to_vec();
        wire.extend_from_slice(b"{{{");
        let error = read_frame::<_, Message>(&mut wire.as_slice()).unwrap_err();
        assert!(error.to_string().contains("bad JSON"), "{error}");
    }
}
