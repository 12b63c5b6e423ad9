//! A walk over MessagePack bytes that checks their shape before serde decodes them.
//!
//! serde trusts the lengths a message declares: a Vec is allocated with room for up to
//! 1 MiB of the items an array header claims, so a handful of bytes claiming four billion
//! items costs a megabyte per nesting level, and a deep enough nesting of containers
//! exhausts the stack. This walk refuses, without allocating and without recursion:
//!
//! - a length (of an array, map, string, binary or extension) larger than the bytes left
//!   (every item of an array takes at least one byte, every entry of a map two, and all the
//!   items still expected by the containers open at once must fit in what is left),
//! - nesting deeper than [`MAX_DEPTH`],
//! - the reserved marker `0xc1`, and bytes after the one top-level value.
//!
//! What passes can still be a malformed message (wrong types, missing fields): serde
//! decides that, but every size hint it sees is then bounded by the bytes received.

use rmp_serde::decode::Error;

/// The deepest nesting of arrays and maps accepted. The protocol's deepest message (a
/// `Finished` report of an argument that could not be read) nests 8 levels.
pub(crate) const MAX_DEPTH: usize = 32;

fn too_long(what: &str, len: u64, at: usize, left: usize) -> Error {
    Error::Syntax(format!(
        "{what} of {len} declared at byte {at} is longer than the {left} bytes left"
    ))
}

/// Checks that `data` is exactly one MessagePack value whose declared lengths fit in
/// `data`, nested at most [`MAX_DEPTH`] levels.
pub(crate) fn check(data: &[u8]) -> Result<(), Error> {
    walk(data, |_| {})
}

/// Where each value of `data` starts (containers before their items), for tests that put
/// bytes between values rather than inside a string or binary.
#[cfg(test)]
pub(crate) fn value_starts(data: &[u8]) -> Result<Vec<usize>, Error> {
    let mut starts = Vec::new();
    walk(data, |at| starts.push(at))?;
    Ok(starts)
}

/// [`check`], telling `on_value` where each value starts.
fn walk(data: &[u8], mut on_value: impl FnMut(usize)) -> Result<(), Error> {
    // The items still expected by each open container (the outermost "container" is
    // the one top-level value).
    let mut open = [0_u64; MAX_DEPTH + 1];
    open[0] = 1;
    let mut depth = 1_usize;
    // The sum of `open`: every one of those items takes at least one byte.
    let mut expected = 1_u64;
    let mut pos = 0_usize;
    loop {
        while depth > 0 && open[depth - 1] == 0 {
            depth -= 1;
        }
        if depth == 0 {
            break;
        }
        open[depth - 1] -= 1;
        expected -= 1;
        let at = pos;
        on_value(at);
        let Some(&marker) = data.get(pos) else {
            return Err(Error::Syntax(format!(
                "the message ends at byte {pos} where a value was expected"
            )));
        };
        pos += 1;
        // (width of the length field, kind) for markers followed by an explicit length.
        let (skip, items): (u64, u64) = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc1 => {
                return Err(Error::Syntax(format!("reserved marker 0xc1 at byte {at}")));
            }
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            // fixext 1, 2, 4, 8, 16: a type byte and the data.
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            // bin 8/16/32, str 8/16/32, ext 8/16/32 (plus the type byte), array 16/32,
            // map 16/32: a big-endian length first.
            0xc4..=0xc9 | 0xd9..=0xdf => {
                let width = match marker {
                    0xc4 | 0xc7 | 0xd9 => 1,
                    0xc5 | 0xc8 | 0xda | 0xdc | 0xde => 2,
                    _ => 4,
                };
                let Some(field) = data.get(pos..pos + width) else {
                    return Err(Error::Syntax(format!(
                        "the length at byte {at} is cut short"
                    )));
                };
                pos += width;
                let len = field.iter().fold(0_u64, |n, b| (n << 8) | u64::from(*b));
                match marker {
                    0xdc | 0xdd => (0, len),
                    0xde | 0xdf => (0, 2 * len),
                    0xc7..=0xc9 => (len + 1, 0),
                    _ => (len, 0),
                }
            }
        };
        let left = data.len() - pos;
        if skip > 0 {
            if skip > left as u64 {
                return Err(too_long("a value", skip, at, left));
            }
            pos += skip as usize;
        }
        if items > 0 {
            // The items of every open container, this one's included, must fit.
            if expected + items > left as u64 {
                return Err(too_long("a container of items", items, at, left));
            }
            if depth > MAX_DEPTH {
                return Err(Error::DepthLimitExceeded);
            }
            open[depth] = items;
            depth += 1;
            expected += items;
        }
    }
    if pos != data.len() {
        return Err(Error::Syntax(format!(
            "{} bytes after the message, from byte {pos}",
            data.len() - pos
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn valid_messages_pass() {
        for value in [
            rmp_serde::to_vec(&0_u8),
            rmp_serde::to_vec(&u64::MAX),
            rmp_serde::to_vec(&-1_i64),
            rmp_serde::to_vec(&1.5_f64),
            rmp_serde::to_vec(&"x".repeat(300)),
            rmp_serde::to_vec(&serde_bytes_like(70_000)),
            rmp_serde::to_vec(&vec![vec![1_u8; 20]; 20]),
            rmp_serde::to_vec(&std::collections::BTreeMap::from([("a", 1), ("b", 2)])),
            rmp_serde::to_vec(&(Option::<u8>::None, true, false)),
        ] {
            let bytes = value.expect("encode");
            check(&bytes).unwrap_or_else(|e| panic!("{bytes:x?}: {e}"));
        }
        // Extensions: fixext 1 and ext 8.
        check(&[0xd4, 0x01, 0x02]).expect("fixext");
        check(&[0xc7, 0x02, 0x05, 0xaa, 0xbb]).expect("ext 8");
    }

    fn serde_bytes_like(len: usize) -> bytes::Bytes {
        bytes::Bytes::from(vec![7_u8; len])
    }

    #[test]
    fn declared_lengths_beyond_the_bytes_are_refused() {
        // An array of 2^32 - 1 items in 5 bytes.
        assert!(check(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        // A map of 2 entries with 3 bytes left (needs 4).
        assert!(check(&[0x82, 0x01, 0x02, 0x03]).is_err());
        // A string of 3 bytes with 2 left.
        assert!(check(&[0xa3, b'a', b'b']).is_err());
        // A bin 32 whose length field is cut short.
        assert!(check(&[0xc6, 0x00, 0x01]).is_err());
        // Two nested arrays of 3 each: 3 + 3 items need 6 bytes, but only 5 follow
        // the inner header.
        assert!(check(&[0x93, 0x93, 0x01, 0x02, 0x03, 0x04]).is_err());
        assert!(check(&[0x93, 0x93, 0x01, 0x02, 0x03, 0x04, 0x05]).is_ok());
    }

    #[test]
    fn deep_nesting_reserved_markers_and_trailing_bytes_are_refused() {
        let mut deep = vec![0x91_u8; MAX_DEPTH];
        deep.push(0xc0);
        check(&deep).expect("MAX_DEPTH levels");
        let mut deeper = vec![0x91_u8; MAX_DEPTH + 1];
        deeper.push(0xc0);
        assert!(matches!(check(&deeper), Err(Error::DepthLimitExceeded)));
        let mut bomb = vec![0x91_u8; 1_000_000];
        bomb.push(0xc0);
        assert!(matches!(check(&bomb), Err(Error::DepthLimitExceeded)));
        assert!(check(&[0xc1]).is_err());
        assert!(check(&[0x01, 0x02]).is_err());
        assert!(check(&[]).is_err());
    }

    proptest! {
        /// Whatever the bytes: no panic, and what passes decodes as MessagePack of
        /// exactly that length (rmp's own reader agrees on where the value ends).
        #[test]
        fn the_walk_agrees_with_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if check(&bytes).is_ok() {
                let mut rest = &bytes[..];
                let value: Result<serde::de::IgnoredAny, _> =
                    rmp_serde::from_read(&mut rest);
                prop_assert!(value.is_ok(), "{:x?}", bytes);
                prop_assert!(rest.is_empty(), "{:x?}", bytes);
            }
        }
    }
}
