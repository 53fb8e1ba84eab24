//! Every fuzz target (`sdweb::fuzzing`) on its committed seed corpus (`fuzz/seeds/<target>/`),
//! then on random mutations of it for a bounded time: `SDWEB_FUZZ_SECONDS` per target (default
//! 5; CI runs the default), seeded by `SDWEB_FUZZ_SEED` (default 1, so a CI failure repeats).
//! A failing input is written to `target/fuzz-failures/<target>-<hash>` and named in the panic;
//! `SDWEB_FUZZ_INPUT=FILE SDWEB_FUZZ_SECONDS=0 cargo test --test fuzz TARGET` runs just that one.
//!
//! Not coverage-guided (that needs nightly: `cargo fuzz`, see fuzz/README.md); this driver is
//! what every CI run can afford on the stable toolchain, and it replays what `cargo fuzz` found.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sdweb::fuzzing::TARGETS;

/// Largest single allocation a target may make: a parser must check sizes against the input
/// before allocating (a 100-byte file must not reserve gigabytes).
const ALLOCATION_LIMIT: usize = 1 << 30;

/// The system allocator, noting each thread's largest request since the last reset. A request
/// over the limit is refused (Rust then aborts the process); the input that made it is written
/// out first, to the file `fuzz()` opened for that.
struct Watching;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static CURRENT: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}
static OVERSIZED_INPUT: OnceLock<(PathBuf, File)> = OnceLock::new();

fn note_request(size: usize) -> bool {
    LARGEST.with(|l| l.set(l.get().max(size)));
    if size <= ALLOCATION_LIMIT {
        return true;
    }
    let (ptr, len) = CURRENT.with(Cell::get);
    if let Some((path, mut file)) = OVERSIZED_INPUT.get().map(|(p, f)| (p, f)) {
        if !ptr.is_null() {
            // Neither writing a borrowed slice nor a static message allocates.
            let _ = file.write_all(unsafe { std::slice::from_raw_parts(ptr, len) });
            let _ = std::io::stderr()
                .write_all(b"fuzz: an input asked for more than 1 GiB at once; it was written to ");
            let _ = std::io::stderr().write_all(path.as_os_str().as_encoded_bytes());
            let _ = std::io::stderr().write_all(b"\n");
        }
    }
    false
}

unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note_request(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note_request(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note_request(new_size) {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target)
}

fn seed_inputs(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the committed seed corpus)", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let inputs: Vec<_> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!inputs.is_empty(), "{} has no seed inputs", dir.display());
    inputs
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that sit on parsers' edges, written as little-endian integers of 1, 2, 4 or 8 bytes.
const EDGES: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    u64::MAX,
    u64::MAX / 2,
    1 << 32,
    1 << 40,
];

/// One to eight random edits of `input`, sometimes spliced with another seed.
fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = rng.next() as u8;
            }
            2 => {
                let width = [1, 2, 4, 8][rng.below(4)];
                let value = EDGES[rng.below(EDGES.len())]
                    .wrapping_add(rng.below(3) as u64)
                    .wrapping_sub(1);
                let bytes = value.to_le_bytes();
                for (i, b) in bytes[..width].iter().enumerate() {
                    if let Some(slot) = out.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            3 => out.truncate(at),
            4 => {
                let end = (at + 1 + rng.below(64)).min(out.len());
                out.drain(at.min(end)..end);
            }
            5 => {
                let n = 1 + rng.below(16);
                let fill = rng.next() as u8;
                out.splice(at..at, std::iter::repeat_n(fill, n));
            }
            6 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(256)).min(out.len());
                let copy = out[start..end].to_vec();
                out.splice(at..at, copy);
            }
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
        }
    }
    out
}

/// Runs `target` on `input`: Err(why) on a panic or an oversized allocation.
fn exec(target: fn(&[u8]), input: &[u8]) -> Result<(), String> {
    LARGEST.with(|l| l.set(0));
    CURRENT.with(|c| c.set((input.as_ptr(), input.len())));
    let outcome = catch_unwind(AssertUnwindSafe(|| target(input)));
    CURRENT.with(|c| c.set((std::ptr::null(), 0)));
    let largest = LARGEST.with(Cell::get);
    match outcome {
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())),
        Ok(()) if largest > ALLOCATION_LIMIT => Err(format!("allocated {largest} bytes at once")),
        Ok(()) => Ok(()),
    }
}

fn failures_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn keep_failure(name: &str, input: &[u8]) -> PathBuf {
    let dir = failures_dir();
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{name}-{hash:016x}"));
    std::fs::write(&path, input).unwrap();
    path
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fuzz(name: &str) {
    let target = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a listed target")
        .1;
    let mut seeds = seed_inputs(name);
    if let Ok(file) = std::env::var("SDWEB_FUZZ_INPUT") {
        seeds =
            vec![std::fs::read(&file).unwrap_or_else(|e| panic!("SDWEB_FUZZ_INPUT {file}: {e}"))];
    }
    OVERSIZED_INPUT.get_or_init(|| {
        let path = failures_dir().join("oversized-allocation");
        let file = File::create(&path).unwrap();
        (path, file)
    });
    let budget = Duration::from_secs_f64(env_or("SDWEB_FUZZ_SECONDS", 5.0));
    let mut rng = Rng(env_or("SDWEB_FUZZ_SEED", 1u64).max(1));
    // Panics are expected and caught here; their default report would flood the log.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let fail = |input: &[u8], why: String| -> ! {
        std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
        let path = keep_failure(name, input);
        panic!(
            "{name}: {why}\n  input kept in {} ({} bytes)",
            path.display(),
            input.len()
        );
    };
    for seed in &seeds {
        if let Err(why) = exec(target, seed) {
            fail(seed, why);
        }
    }
    let start = Instant::now();
    let mut execs = 0u64;
    while start.elapsed() < budget {
        let pick = rng.below(seeds.len());
        let input = mutate(&mut rng, &seeds[pick], &seeds);
        if let Err(why) = exec(target, &input) {
            fail(&input, why);
        }
        execs += 1;
    }
    std::panic::set_hook(report);
    println!(
        "fuzz {name}: {} seeds, {execs} mutated inputs in {:.1} s ({:.0}/s), 0 failures",
        seeds.len(),
        start.elapsed().as_secs_f64(),
        execs as f64 / start.elapsed().as_secs_f64()
    );
}

#[test]
fn every_target_has_a_test() {
    let source = include_str!("fuzz.rs");
    for (name, _) in TARGETS {
        assert!(
            source.contains(&format!("fn {name}() {{")),
            "no test for fuzz target {name}"
        );
    }
}

#[test]
fn safetensors_header() {
    fuzz("safetensors_header");
}

#[test]
fn safetensors_stream() {
    fuzz("safetensors_stream");
}

#[test]
fn quantize_stream() {
    fuzz("quantize_stream");
}

#[test]
fn gguf_reader() {
    fuzz("gguf_reader");
}

#[test]
fn png_image() {
    fuzz("png_image");
}

#[test]
fn tokenizer() {
    fuzz("tokenizer");
}

#[test]
fn a1111_parameters() {
    fuzz("a1111_parameters");
}

#[test]
fn prompt_syntax() {
    fuzz("prompt_syntax");
}
