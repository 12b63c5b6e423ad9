//! A demo function registry, for trying Handoff out: the `handoff-node` binary, the
//! `cluster` example and the multi-process tests run it (they include this file), so that
//! every node of a demo cluster can run the same functions. It is not meant for real work,
//! and not part of the library: your own nodes run `handoff::cli::main` with a registry of
//! your own functions.
//!
//! The functions, by the name they are registered under (parameters after the arrow's
//! left are the function's arguments, dependency results first, then extra arguments):
//!
//! | name | signature | does |
//! |---|---|---|
//! | `identity` | `(i64) -> i64` | returns its argument |
//! | `add` | `(i64, i64) -> i64` | the sum (fails on overflow) |
//! | `multiply` | `(i64, i64) -> i64` | the product (fails on overflow) |
//! | `double` | `(i64) -> i64` | twice the argument (fails on overflow) |
//! | `sum` | `(Vec<i64>) -> i64` | the sum of a list, e.g. an as-list argument (fails on overflow) |
//! | `format` | `(i64) -> String` | `The final answer is: <x>` |
//! | `bytes` | `(u64 len, u8 fill) -> Bytes` | `len` bytes of `fill` (at most [`MAX_BYTES`]) |
//! | `len_of` | `(Bytes) -> u64` | the length of a byte string, read without a copy |
//! | `fail` | `(i64) -> i64` | always fails with [`DemoError::Failed`] |
//! | `crash` | `(i64) -> i64` | aborts the process running it (for failure tests) |
//! | `panic` | `(i64) -> i64` | panics (for failure tests: the node catches it, the call fails) |
//! | `sleep_ms` | `(u64) -> u64` | sleeps that many milliseconds (at most [`MAX_SLEEP_MS`]) and returns them |
//! | `load_data` | `(u32 count) -> Vec<i64>` | the seed's data loader: `1..=count` |
//! | `gpu_process` | `(Vec<i64>) -> Vec<i64>` | the seed's "GPU" step: squares each value |
//! | `format_result` | `(Vec<i64>) -> String` | the seed's formatter: how many values, and their sum |
//! | `make_tile` | `(u32 index, u32 size) -> Tile` | a `size`×`size` [`Tile`] whose pixels depend on `index` |
//! | `resize` | `(Tile, u32 factor) -> Tile` | shrinks a tile by `factor`, averaging blocks |
//! | `filter` | `(Tile) -> Tile` | a 3×3 box blur |
//! | `gpu_enhance` | `(Tile) -> Tile` | stretches the contrast to the full 0–255 range |
//! | `hold_tile` | `(Tile, u64 ms) -> Tile` | passes a tile on after sleeping `ms` (for failure tests) |
//! | `aggregate` | `(List<Tile>) -> Summary` | a [`Summary`] of an as-list argument of tiles |
//!
//! Each is also a plain Rust function here (or a one-liner in [`registry`]), so a
//! program can compute locally what a cluster should return.

// Each program that includes this file uses a part of it.
#![allow(dead_code, unreachable_pub)]

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use handoff_core::{List, RegisterError, Registry, Shared};
use serde::{Deserialize, Serialize};

/// The largest byte string `bytes` makes: 1 GiB.
pub const MAX_BYTES: u64 = 1 << 30;
/// The longest `sleep_ms` sleeps: ten minutes.
pub const MAX_SLEEP_MS: u64 = 10 * 60 * 1000;
/// The most values `load_data` makes.
pub const MAX_VALUES: u32 = 10_000_000;
/// The largest tile side `make_tile` makes, in pixels.
pub const MAX_TILE_SIZE: u32 = 4096;

/// Why a demo function failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemoError {
    /// The result does not fit an `i64`.
    #[error("`{operation}` overflows an i64")]
    Overflow {
        /// The function.
        operation: &'static str,
    },
    /// An argument asks for more than the demo allows.
    #[error("{what} of {requested} is more than the demo's limit of {limit}")]
    TooLarge {
        /// What was asked for.
        what: &'static str,
        /// How much.
        requested: u64,
        /// The most allowed.
        limit: u64,
    },
    /// A tile side of zero was asked for.
    #[error("a tile has at least one pixel per side")]
    EmptyTile,
    /// `resize` got a factor of zero, or one larger than the tile.
    #[error("cannot shrink a tile of side {size} by a factor of {factor}")]
    InvalidFactor {
        /// The tile's side.
        size: u32,
        /// The factor.
        factor: u32,
    },
    /// A tile's pixels do not match its side (a tile built elsewhere).
    #[error("tile {index}: a side of {size} needs {size}² pixels, found {pixels}")]
    InvalidTile {
        /// The tile's index.
        index: u32,
        /// Its side.
        size: u32,
        /// The number of pixels found.
        pixels: usize,
    },
    /// `fail` always fails.
    #[error("`fail` fails on purpose (input {input})")]
    Failed {
        /// Its argument.
        input: i64,
    },
}

/// A square tile of 8-bit grey pixels, row by row; on the wire its pixels are one byte
/// string. A tile always has `size * size` pixels (checked when it is built or decoded).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TileParts")]
pub struct Tile {
    index: u32,
    size: u32,
    #[serde(with = "serde_bytes")]
    pixels: Vec<u8>,
}

/// A tile as decoded, before its pixel count is checked.
#[derive(Deserialize)]
struct TileParts {
    index: u32,
    size: u32,
    #[serde(with = "serde_bytes")]
    pixels: Vec<u8>,
}

impl TryFrom<TileParts> for Tile {
    type Error = DemoError;

    fn try_from(parts: TileParts) -> Result<Tile, DemoError> {
        Tile::new(parts.index, parts.size, parts.pixels)
    }
}

impl Tile {
    /// A tile of side `size` with these pixels (row by row); `index` is its position in
    /// the image. Fails unless there are `size * size` pixels.
    pub fn new(index: u32, size: u32, pixels: Vec<u8>) -> Result<Tile, DemoError> {
        let side = usize::try_from(size).unwrap_or(usize::MAX);
        if side.checked_mul(side) != Some(pixels.len()) {
            return Err(DemoError::InvalidTile {
                index,
                size,
                pixels: pixels.len(),
            });
        }
        Ok(Tile {
            index,
            size,
            pixels,
        })
    }

    /// Its position in the image.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Its side, in pixels.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Its pixels, row by row.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The pixel at column `x`, row `y`; coordinates outside the tile are clamped to its
    /// edge.
    pub fn pixel(&self, x: i64, y: i64) -> u8 {
        let last = i64::from(self.size) - 1;
        let (x, y) = (x.clamp(0, last.max(0)), y.clamp(0, last.max(0)));
        let at = y * i64::from(self.size) + x;
        usize::try_from(at)
            .ok()
            .and_then(|at| self.pixels.get(at))
            .copied()
            .unwrap_or(0)
    }

    /// A 64-bit FNV-1a digest of the index, side and pixels.
    pub fn checksum(&self) -> u64 {
        let mut hash = Fnv::new();
        hash.write(&self.index.to_le_bytes());
        hash.write(&self.size.to_le_bytes());
        hash.write(&self.pixels);
        hash.finish()
    }

    /// A tile with the same index whose pixel at `(x, y)` is `f(x, y)`.
    fn map(&self, size: u32, f: impl Fn(i64, i64) -> u8) -> Tile {
        let pixels = (0..i64::from(size))
            .flat_map(|y| (0..i64::from(size)).map(move |x| (x, y)))
            .map(|(x, y)| f(x, y))
            .collect();
        Tile {
            index: self.index,
            size,
            pixels,
        }
    }
}

impl fmt::Debug for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tile")
            .field("index", &self.index)
            .field("size", &self.size)
            .field("checksum", &format_args!("{:#018x}", self.checksum()))
            .finish()
    }
}

/// What [`aggregate`] says about a set of tiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// How many tiles.
    pub tiles: u64,
    /// How many pixels in all.
    pub pixels: u64,
    /// The sum of every pixel's value.
    pub brightness: u64,
    /// A digest of the tiles' checksums, in order.
    pub checksum: u64,
}

impl Summary {
    /// The mean pixel value (0 when there are no pixels).
    pub fn mean_brightness(&self) -> f64 {
        if self.pixels == 0 {
            0.0
        } else {
            self.brightness as f64 / self.pixels as f64
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} tiles, {} pixels, mean brightness {:.2}, checksum {:#018x}",
            self.tiles,
            self.pixels,
            self.mean_brightness(),
            self.checksum
        )
    }
}

/// The demo registry: every function in the [module docs](self)' table.
pub fn registry() -> Result<Registry, RegisterError> {
    let mut registry = Registry::new();
    registry.register("identity", |x: i64| x)?;
    registry.register_fallible("add", |x: i64, y: i64| {
        x.checked_add(y)
            .ok_or(DemoError::Overflow { operation: "add" })
    })?;
    registry.register_fallible("multiply", |x: i64, y: i64| {
        x.checked_mul(y).ok_or(DemoError::Overflow {
            operation: "multiply",
        })
    })?;
    registry.register_fallible("double", |x: i64| {
        x.checked_mul(2).ok_or(DemoError::Overflow {
            operation: "double",
        })
    })?;
    registry.register_fallible("sum", |values: Vec<i64>| sum(&values))?;
    registry.register("format", |x: i64| format!("The final answer is: {x}"))?;
    registry.register_fallible("bytes", bytes)?;
    registry.register("len_of", |bytes: Shared<Bytes>| bytes.len() as u64)?;
    registry.register_fallible("fail", |input: i64| {
        Err::<i64, _>(DemoError::Failed { input })
    })?;
    registry.register("crash", |code: i64| -> i64 {
        // Failure tests: the process running it dies at once, as if it had crashed.
        tracing::error!(code, "demo `crash`: aborting this process");
        std::process::abort()
    })?;
    registry.register("panic", |input: i64| -> i64 {
        // Failure tests: user code that panics is caught and fails the call.
        panic!("demo `panic` called with {input}")
    })?;
    registry.register_fallible("sleep_ms", sleep_ms)?;
    registry.register_fallible("load_data", load_data)?;
    registry.register_fallible("gpu_process", |values: Vec<i64>| gpu_process(&values))?;
    registry.register("format_result", |values: Vec<i64>| format_result(&values))?;
    registry.register_fallible("make_tile", make_tile)?;
    registry.register_fallible("resize", |tile: Shared<Tile>, factor: u32| {
        resize(&tile, factor)
    })?;
    registry.register("filter", |tile: Shared<Tile>| filter(&tile))?;
    registry.register("gpu_enhance", |tile: Shared<Tile>| gpu_enhance(&tile))?;
    registry.register_fallible("hold_tile", |tile: Shared<Tile>, ms: u64| {
        sleep_ms(ms).map(|_| tile)
    })?;
    registry.register("aggregate", |tiles: List<Shared<Tile>>| {
        aggregate(tiles.iter().map(|tile| &**tile))
    })?;
    Ok(registry)
}

/// The sum of `values`; fails on overflow.
pub fn sum(values: &[i64]) -> Result<i64, DemoError> {
    values
        .iter()
        .try_fold(0_i64, |total, v| total.checked_add(*v))
        .ok_or(DemoError::Overflow { operation: "sum" })
}

/// `len` bytes of `fill`, at most [`MAX_BYTES`].
pub fn bytes(len: u64, fill: u8) -> Result<Bytes, DemoError> {
    let too_large = DemoError::TooLarge {
        what: "a byte string",
        requested: len,
        limit: MAX_BYTES,
    };
    if len > MAX_BYTES {
        return Err(too_large);
    }
    let len = usize::try_from(len).map_err(|_| too_large)?;
    Ok(Bytes::from(vec![fill; len]))
}

/// Sleeps `ms` milliseconds (at most [`MAX_SLEEP_MS`]) and returns `ms`.
pub fn sleep_ms(ms: u64) -> Result<u64, DemoError> {
    if ms > MAX_SLEEP_MS {
        return Err(DemoError::TooLarge {
            what: "a sleep (ms)",
            requested: ms,
            limit: MAX_SLEEP_MS,
        });
    }
    std::thread::sleep(Duration::from_millis(ms));
    Ok(ms)
}

/// The seed's data loader: the numbers `1..=count` (at most [`MAX_VALUES`]).
pub fn load_data(count: u32) -> Result<Vec<i64>, DemoError> {
    if count > MAX_VALUES {
        return Err(DemoError::TooLarge {
            what: "a data set",
            requested: u64::from(count),
            limit: u64::from(MAX_VALUES),
        });
    }
    Ok((1..=i64::from(count)).collect())
}

/// The seed's GPU step, simulated: squares each value; fails on overflow.
pub fn gpu_process(values: &[i64]) -> Result<Vec<i64>, DemoError> {
    values
        .iter()
        .map(|v| v.checked_mul(*v))
        .collect::<Option<Vec<_>>>()
        .ok_or(DemoError::Overflow {
            operation: "gpu_process",
        })
}

/// The seed's formatter: `Processed <n> values on the GPU; their sum is <sum>`.
pub fn format_result(values: &[i64]) -> String {
    let total = values
        .iter()
        .fold(0_i128, |total, v| total.saturating_add(i128::from(*v)));
    format!(
        "Processed {} values on the GPU; their sum is {total}",
        values.len()
    )
}

/// A `size`×`size` tile (1 to [`MAX_TILE_SIZE`]) whose pixels are a diagonal gradient
/// plus deterministic noise, both depending on `index`.
pub fn make_tile(index: u32, size: u32) -> Result<Tile, DemoError> {
    if size == 0 {
        return Err(DemoError::EmptyTile);
    }
    if size > MAX_TILE_SIZE {
        return Err(DemoError::TooLarge {
            what: "a tile side",
            requested: u64::from(size),
            limit: u64::from(MAX_TILE_SIZE),
        });
    }
    let seed = u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let span = 2 * u64::from(size);
    let blank = Tile {
        index,
        size,
        pixels: Vec::new(),
    };
    Ok(blank.map(size, |x, y| {
        let (x, y) = (x.unsigned_abs(), y.unsigned_abs());
        let gradient = (x + y + u64::from(index) * 7) % span * 192 / span;
        let noise = splitmix(seed ^ (y << 32 | x)) % 64;
        // At most 191 + 63.
        u8::try_from(gradient + noise).unwrap_or(u8::MAX)
    }))
}

/// The tile shrunk by `factor`: each pixel is the mean of a `factor`×`factor` block
/// (the side becomes `size / factor`; leftover rows and columns are dropped). Fails for
/// a factor of zero or above the side.
pub fn resize(tile: &Tile, factor: u32) -> Result<Tile, DemoError> {
    if factor == 0 || factor > tile.size {
        return Err(DemoError::InvalidFactor {
            size: tile.size,
            factor,
        });
    }
    let f = i64::from(factor);
    let area = u64::from(factor) * u64::from(factor);
    Ok(tile.map(tile.size / factor, |x, y| {
        let total: u64 = (0..f)
            .flat_map(|dy| (0..f).map(move |dx| (dx, dy)))
            .map(|(dx, dy)| u64::from(tile.pixel(x * f + dx, y * f + dy)))
            .sum();
        u8::try_from(total / area).unwrap_or(u8::MAX)
    }))
}

/// A 3×3 box blur (pixels past the edge repeat the edge).
pub fn filter(tile: &Tile) -> Tile {
    tile.map(tile.size, |x, y| {
        let total: u32 = (-1..=1)
            .flat_map(|dy| (-1..=1).map(move |dx| (dx, dy)))
            .map(|(dx, dy)| u32::from(tile.pixel(x + dx, y + dy)))
            .sum();
        u8::try_from(total / 9).unwrap_or(u8::MAX)
    })
}

/// Stretches the contrast so that the darkest pixel becomes 0 and the brightest 255 (a
/// flat tile is returned as it is). Stands in for work a GPU would do.
pub fn gpu_enhance(tile: &Tile) -> Tile {
    let (Some(&low), Some(&high)) = (tile.pixels.iter().min(), tile.pixels.iter().max()) else {
        return tile.clone();
    };
    if low == high {
        return tile.clone();
    }
    let range = u32::from(high - low);
    tile.map(tile.size, |x, y| {
        let v = u32::from(tile.pixel(x, y).saturating_sub(low));
        u8::try_from(v * 255 / range).unwrap_or(u8::MAX)
    })
}

/// A summary of `tiles`, in order: their number, pixels, total brightness, and a digest
/// of their checksums.
pub fn aggregate<'a>(tiles: impl IntoIterator<Item = &'a Tile>) -> Summary {
    let mut summary = Summary {
        tiles: 0,
        pixels: 0,
        brightness: 0,
        checksum: 0,
    };
    let mut digest = Fnv::new();
    for tile in tiles {
        summary.tiles += 1;
        summary.pixels += tile.pixels.len() as u64;
        summary.brightness += tile.pixels.iter().map(|p| u64::from(*p)).sum::<u64>();
        digest.write(&tile.checksum().to_le_bytes());
    }
    summary.checksum = digest.finish();
    summary
}

/// SplitMix64: a well-mixed 64-bit value from `x`.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use handoff_core::Value;

    use super::*;

    #[test]
    fn the_functions_run_here_as_on_a_node() -> Result<(), Box<dyn std::error::Error>> {
        let registry = super::registry()?;
        assert!(registry.contains("make_tile"));
        let tile = super::make_tile(3, 16)?;
        let small = super::resize(&tile, 2)?;
        assert_eq!(small.size(), 8);
        let summary = super::aggregate([&super::filter(&small)]);
        assert_eq!(summary.tiles, 1);
        Ok(())
    }

    #[test]
    fn the_registry_holds_every_function_of_the_table() {
        let registry = registry().expect("no duplicate names");
        let names: Vec<String> = registry.names().iter().map(|n| n.to_string()).collect();
        assert_eq!(
            names,
            [
                "add",
                "aggregate",
                "bytes",
                "crash",
                "double",
                "fail",
                "filter",
                "format",
                "format_result",
                "gpu_enhance",
                "gpu_process",
                "hold_tile",
                "identity",
                "len_of",
                "load_data",
                "make_tile",
                "multiply",
                "panic",
                "resize",
                "sleep_ms",
                "sum",
            ]
        );
    }

    #[test]
    fn arithmetic_fails_on_overflow_instead_of_panicking() {
        let registry = registry().expect("registry");
        let call = |name: &str, args: Vec<Value>| registry.call(name, args);
        let add = call("add", vec![Value::new(2_i64), Value::new(3_i64)]).expect("add");
        assert_eq!(add.get::<i64>(), Ok(5));
        assert!(call("add", vec![Value::new(i64::MAX), Value::new(1_i64)]).is_err());
        assert!(call("double", vec![Value::new(i64::MIN)]).is_err());
        assert!(call("multiply", vec![Value::new(i64::MAX), Value::new(2_i64)]).is_err());
        assert_eq!(sum(&[1, 2, 3]), Ok(6));
        assert!(sum(&[i64::MAX, 1]).is_err());
        assert!(call("fail", vec![Value::new(1_i64)]).is_err());
        assert!(gpu_process(&[i64::MAX]).is_err());
    }

    #[test]
    fn limits_are_errors() {
        assert!(matches!(
            bytes(MAX_BYTES + 1, 0),
            Err(DemoError::TooLarge { .. })
        ));
        assert_eq!(bytes(4, 7).expect("small").as_ref(), [7, 7, 7, 7]);
        assert!(sleep_ms(MAX_SLEEP_MS + 1).is_err());
        assert!(load_data(MAX_VALUES + 1).is_err());
        assert!(matches!(make_tile(0, 0), Err(DemoError::EmptyTile)));
        assert!(make_tile(0, MAX_TILE_SIZE + 1).is_err());
    }

    #[test]
    fn the_seed_pipeline() {
        let data = load_data(4).expect("load");
        assert_eq!(data, [1, 2, 3, 4]);
        let squared = gpu_process(&data).expect("squares");
        assert_eq!(squared, [1, 4, 9, 16]);
        assert_eq!(
            format_result(&squared),
            "Processed 4 values on the GPU; their sum is 30"
        );
    }

    #[test]
    fn tiles_are_deterministic_and_keep_their_shape() {
        let tile = make_tile(5, 32).expect("tile");
        assert_eq!(tile, make_tile(5, 32).expect("tile"));
        assert_ne!(tile.checksum(), make_tile(6, 32).expect("tile").checksum());
        assert_eq!(tile.pixels().len(), 32 * 32);

        let small = resize(&tile, 4).expect("resize");
        assert_eq!((small.index(), small.size()), (5, 8));
        let mean = |t: &Tile| t.pixels().iter().map(|p| u64::from(*p)).sum::<u64>();
        // Averaging keeps the mean (up to rounding down).
        assert!(mean(&small) * 16 <= mean(&tile));
        assert!(matches!(
            resize(&tile, 0),
            Err(DemoError::InvalidFactor { .. })
        ));
        assert!(resize(&tile, 33).is_err());

        let blurred = filter(&small);
        assert_eq!(blurred.size(), 8);
        let flat = Tile::new(0, 3, vec![9; 9]).expect("tile");
        assert_eq!(filter(&flat), flat);
        assert_eq!(gpu_enhance(&flat), flat);

        let enhanced = gpu_enhance(&blurred);
        assert_eq!(enhanced.pixels().iter().min(), Some(&0));
        assert_eq!(enhanced.pixels().iter().max(), Some(&255));
    }

    #[test]
    fn tiles_cross_the_wire_as_byte_strings_and_are_checked() {
        let tile = make_tile(1, 64).expect("tile");
        let encoded = Value::new(tile.clone()).to_msgpack().expect("encodes");
        // A byte string: about one byte per pixel.
        assert!(encoded.len() < 64 * 64 + 32, "{} bytes", encoded.len());
        let decoded = Value::from_msgpack(encoded).get::<Tile>().expect("decodes");
        assert_eq!(decoded, tile);

        let bad = Value::new(serde_bytes_parts(2, 4, vec![0; 3]))
            .to_msgpack()
            .expect("encodes");
        assert!(Value::from_msgpack(bad).get::<Tile>().is_err());
        assert!(matches!(
            Tile::new(2, 4, vec![0; 3]),
            Err(DemoError::InvalidTile { pixels: 3, .. })
        ));
    }

    /// A tile's wire form, with any pixel count.
    fn serde_bytes_parts(index: u32, size: u32, pixels: Vec<u8>) -> impl Serialize {
        #[derive(Serialize)]
        struct Parts {
            index: u32,
            size: u32,
            #[serde(with = "serde_bytes")]
            pixels: Vec<u8>,
        }
        Parts {
            index,
            size,
            pixels,
        }
    }

    #[test]
    fn aggregate_reads_an_as_list_argument() {
        let registry = registry().expect("registry");
        let tiles: Vec<Tile> = (0..3).map(|i| make_tile(i, 8).expect("tile")).collect();
        let list = Value::list(tiles.iter().cloned().map(Value::new).collect());
        let summary = registry
            .call("aggregate", vec![list])
            .expect("aggregates")
            .get::<Summary>()
            .expect("a summary");
        assert_eq!(summary, aggregate(&tiles));
        assert_eq!((summary.tiles, summary.pixels), (3, 3 * 64));
        assert!(summary.to_string().starts_with("3 tiles, 192 pixels"));
    }

    #[test]
    fn len_of_reads_bytes_made_by_bytes() {
        let registry = registry().expect("registry");
        let made = registry
            .call("bytes", vec![Value::new(1000_u64), Value::new(1_u8)])
            .expect("bytes");
        let len = registry.call("len_of", vec![made]).expect("len_of");
        assert_eq!(len.get::<u64>(), Ok(1000));
    }
}
