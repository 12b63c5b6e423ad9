//! Mutations of inputs: byte-level ones (flips, inserts, deletions, splices), and ones
//! that know MessagePack and the frame prefix (huge declared lengths, deep nesting).

use crate::rng::Rng;

/// Bytes that mean something in MessagePack: container and string markers with explicit
/// lengths, the reserved 0xc1, boundaries of the fixed ranges.
const MARKERS: &[u8] = &[
    0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
    0xc8, 0xc9, 0xca, 0xcb, 0xcf, 0xd3, 0xd4, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0,
    0xff,
];

/// Lengths worth declaring.
fn interesting_len(rng: &mut Rng, actual: usize) -> u32 {
    let actual = u32::try_from(actual).unwrap_or(u32::MAX);
    match rng.below(10) {
        0 => 0,
        1 => u32::MAX,
        2 => u32::MAX / 2,
        3 => 1 << 20,
        4 => (1 << 20) + 1,
        5 => actual.wrapping_add(1),
        6 => actual.saturating_sub(1),
        7 => 16 << 20,
        8 => rng.next_u64() as u32,
        _ => rng.below(1 << 16) as u32,
    }
}

/// Inserts a MessagePack header declaring a huge (or odd) length at a random place.
fn insert_length_header(rng: &mut Rng, data: &mut Vec<u8>) {
    let len = interesting_len(rng, data.len());
    let marker = *rng.pick(&[
        0xdc_u8, 0xdd, 0xde, 0xdf, 0xd9, 0xda, 0xdb, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9,
    ]);
    let mut header = vec![marker];
    match marker {
        0xd9 | 0xc4 | 0xc7 => header.push(len as u8),
        0xdc | 0xde | 0xda | 0xc5 | 0xc8 => header.extend_from_slice(&(len as u16).to_be_bytes()),
        _ => header.extend_from_slice(&len.to_be_bytes()),
    }
    if matches!(marker, 0xc7..=0xc9) {
        header.push(rng.byte()); // the ext type
    }
    let at = rng.below(data.len() + 1);
    if rng.chance(1, 2) {
        // Replace what is there (often another header) rather than shift everything.
        let end = (at + header.len()).min(data.len());
        data.splice(at..end, header);
    } else {
        data.splice(at..at, header);
    }
}

/// Overwrites the length field after an existing length-carrying marker.
fn tweak_existing_length(rng: &mut Rng, data: &mut [u8]) {
    let positions: Vec<usize> = data
        .iter()
        .enumerate()
        .filter(|(_, b)| matches!(**b, 0x80..=0xbf | 0xc4..=0xc9 | 0xd9..=0xdf))
        .map(|(i, _)| i)
        .collect();
    if positions.is_empty() {
        return;
    }
    let at = *rng.pick(&positions);
    let len = interesting_len(rng, data.len() - at);
    let width = match data[at] {
        0x80..=0x8f => {
            data[at] = 0x80 | (len as u8 & 0x0f);
            return;
        }
        0x90..=0x9f => {
            data[at] = 0x90 | (len as u8 & 0x0f);
            return;
        }
        0xa0..=0xbf => {
            data[at] = 0xa0 | (len as u8 & 0x1f);
            return;
        }
        0xc4 | 0xc7 | 0xd9 => 1,
        0xc5 | 0xc8 | 0xda | 0xdc | 0xde => 2,
        _ => 4,
    };
    let bytes = len.to_be_bytes();
    for (i, b) in bytes[4 - width..].iter().enumerate() {
        if let Some(slot) = data.get_mut(at + 1 + i) {
            *slot = *b;
        }
    }
}

/// Applies one to four random mutations to `data`; `others` are other inputs to splice from.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>]) {
    for _ in 0..rng.between(1, 4) {
        mutate_once(rng, data, others);
    }
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>]) {
    let len = data.len();
    match rng.below(15) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.byte();
        }
        2 if len > 0 => {
            let i = rng.below(len);
            data[i] = *rng.pick(MARKERS);
        }
        3 => {
            let at = rng.below(len + 1);
            let n = rng.between(1, 8);
            let extra = rng.bytes(n);
            data.splice(at..at, extra);
        }
        4 if len > 0 => {
            let at = rng.below(len);
            let end = (at + rng.between(1, 16)).min(len);
            data.drain(at..end);
        }
        5 if len > 0 => {
            let from = rng.below(len);
            let end = (from + rng.between(1, 64)).min(len);
            let piece = data[from..end].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, piece);
        }
        6 => data.truncate(rng.below(len + 1)),
        7 if !others.is_empty() => {
            let other = rng.pick(others);
            let from = rng.below(other.len() + 1);
            let at = rng.below(len + 1);
            data.truncate(at);
            data.extend_from_slice(&other[from..]);
        }
        8 | 9 => insert_length_header(rng, data),
        10 | 11 => tweak_existing_length(rng, data),
        12 => {
            // Deep nesting: arrays of one element (or maps of one entry) inside each other.
            let depth = match rng.below(3) {
                0 => rng.between(1, 40),
                1 => rng.between(40, 2000),
                _ => rng.between(2000, 100_000),
            };
            let marker = if rng.chance(1, 2) { 0x91 } else { 0x81 };
            let at = rng.below(len + 1);
            let mut bomb = vec![marker; depth];
            bomb.push(0xc0);
            data.splice(at..at, bomb);
        }
        13 if len >= 8 => {
            // An interesting integer over 1, 2, 4 or 8 bytes.
            let width = *rng.pick(&[1_usize, 2, 4, 8]);
            let at = rng.below(len - width.min(len) + 1);
            let value = match rng.below(4) {
                0 => 0_u64,
                1 => u64::MAX,
                2 => i64::MAX as u64,
                _ => rng.next_u64(),
            };
            let bytes = value.to_be_bytes();
            data[at..at + width].copy_from_slice(&bytes[8 - width..]);
        }
        _ => {
            let at = rng.below(len + 1);
            data.insert(at, *rng.pick(MARKERS));
        }
    }
}

/// Mutates a frame (a `u32` big-endian length, then the body): most often the body, then
/// re-framed with its true length so that the decoder sees it; sometimes the prefix, or
/// the raw bytes.
pub fn mutate_frame(rng: &mut Rng, frame: &mut Vec<u8>, others: &[Vec<u8>]) {
    if frame.len() < 4 || rng.chance(1, 5) {
        mutate(rng, frame, others);
        return;
    }
    let mut body = frame.split_off(4);
    mutate(rng, &mut body, others);
    let declared = if rng.chance(1, 8) {
        interesting_len(rng, body.len())
    } else {
        u32::try_from(body.len()).unwrap_or(u32::MAX)
    };
    frame.clear();
    frame.extend_from_slice(&declared.to_be_bytes());
    frame.extend_from_slice(&body);
    if rng.chance(1, 10) {
        // Bytes after the frame (a second frame, or garbage) must not matter.
        let n = rng.below(16);
        let extra = rng.bytes(n);
        frame.extend_from_slice(&extra);
    }
}
