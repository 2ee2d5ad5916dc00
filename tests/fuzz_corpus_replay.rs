//! Replays the committed fuzz corpus (`tests/fixtures/fuzz_corpus/<target>/`, written by
//! `gen_corpus.py` there) through the loader entry points of `edgellm::fuzzing`, then runs a
//! seeded, deterministic mutation loop over the valid seeds, so that stable `cargo test` covers
//! the same code the cargo-fuzz targets in `fuzz/` drive.
//!
//! A loader must never panic or hang on any input: each call runs on a worker thread under
//! `catch_unwind` with a time limit, and an input that panics or hangs is written to
//! `<CARGO_TARGET_TMPDIR>/fuzz_failures/<target>/` and named in the failure.
//! The `ok_` seeds come from the reference writers (gguf, safetensors, tokenizers packages) or the
//! committed tiny models and must also be accepted, which proves the mutants start from inputs
//! that reach past the first check. An abort (stack overflow, failed allocation) kills the test
//! binary instead; rerun with `EDGELLM_FUZZ_VERBOSE=1` to see the last case started.
//!
//! `EDGELLM_FUZZ_ITERS=<n>` overrides the mutations per seed (default [`DEFAULT_ITERS`]).

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Once};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Mutations per `ok_` seed. With the test profile's opt-level 3 the four targets together take
/// a few seconds on one core; the tokenizer target, which builds a whole vocabulary per input,
/// dominates.
const DEFAULT_ITERS: usize = 2000;
/// An input without a result after this long is reported as a hang: the slowest seed takes about
/// a millisecond, so even a loaded CI machine stays three orders of magnitude below it.
const SLOW_INPUT: Duration = Duration::from_secs(5);
/// Mutation operators applied per case, at most.
const MAX_STACKED_MUTATIONS: u64 = 4;

/// Panics this test has found in code outside the fuzzing harness's reach to fix, tolerated (and
/// counted) until their owners fix them: (a substring of the panic location, what the bug is).
/// A panic anywhere else fails the test; `EDGELLM_FUZZ_STRICT=1` fails on these too. Delete an
/// entry once its fix lands, so the corpus files that reproduce it guard the fix.
const KNOWN_PANICS: &[(&str, &str)] = &[];

/// Mutants that abort the test process (an allocation the size of the address space cannot be
/// caught) in code outside the harness: (seed and mutation index, what the bug is). They are
/// skipped unless `EDGELLM_FUZZ_STRICT=1`; the same bug has a committed reproducer under
/// `tests/fixtures/fuzz_corpus/known_hangs/`. Delete an entry once its fix lands.
const KNOWN_ABORTS: &[(&str, &str)] = &[];

/// How inputs of a target are laid out, which picks the structure-aware mutations.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Gguf,
    Safetensors,
    Json,
}

struct Target {
    name: &'static str,
    entry: fn(&[u8]) -> bool,
    layout: Layout,
}

#[test]
fn gguf_loader_survives_corpus_and_mutations() {
    run(Target {
        name: "gguf",
        entry: edgellm::fuzzing::gguf,
        layout: Layout::Gguf,
    });
}

#[test]
fn safetensors_loader_survives_corpus_and_mutations() {
    run(Target {
        name: "safetensors",
        entry: edgellm::fuzzing::safetensors_header,
        layout: Layout::Safetensors,
    });
}

#[test]
fn hf_config_loader_survives_corpus_and_mutations() {
    run(Target {
        name: "hf_config",
        entry: edgellm::fuzzing::hf_config,
        layout: Layout::Json,
    });
}

#[test]
fn tokenizer_json_loader_survives_corpus_and_mutations() {
    run(Target {
        name: "tokenizer_json",
        entry: edgellm::fuzzing::tokenizer_json,
        layout: Layout::Json,
    });
}

/// Inputs that hang a loader today, kept out of the replayed corpus (a hung thread cannot be
/// stopped, only abandoned) in `known_hangs/`, which is absent while there are none; each must
/// finish once its cause is fixed, and then moves to its target's directory as a `bad_` file.
#[test]
fn known_hangs_now_finish() {
    install_quiet_hook();
    let targets = [
        Target {
            name: "gguf",
            entry: edgellm::fuzzing::gguf,
            layout: Layout::Gguf,
        },
        Target {
            name: "safetensors",
            entry: edgellm::fuzzing::safetensors_header,
            layout: Layout::Safetensors,
        },
        Target {
            name: "hf_config",
            entry: edgellm::fuzzing::hf_config,
            layout: Layout::Json,
        },
        Target {
            name: "tokenizer_json",
            entry: edgellm::fuzzing::tokenizer_json,
            layout: Layout::Json,
        },
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz_corpus/known_hangs");
    let mut failures = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let target = targets
            .iter()
            .find(|t| {
                name.strip_prefix(t.name)
                    .is_some_and(|rest| rest.starts_with('_'))
            })
            .unwrap_or_else(|| panic!("{name}: file name does not start with a target name"));
        let data = std::fs::read(&path).expect("read known hang");
        let mut worker = Worker::spawn(target.entry);
        match call(target, &mut worker, &name, &data) {
            Outcome::Accepted(_) => {}
            Outcome::Known(_, f) | Outcome::Failed(f) => failures.push(f),
        }
    }
    assert!(
        failures.is_empty(),
        "still failing:\n{}",
        failures.join("\n")
    );
}

/// Replays the corpus, then mutates every `ok_` seed; fails listing every bad input.
fn run(target: Target) {
    install_quiet_hook();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz_corpus")
        .join(target.name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() > 10,
        "{}: corpus is missing (run gen_corpus.py)",
        dir.display()
    );

    let strict = std::env::var_os("EDGELLM_FUZZ_STRICT").is_some();
    let mut failures = Vec::new();
    let mut known: Vec<(usize, String)> = vec![(0, String::new()); KNOWN_PANICS.len()];
    let mut tally = |outcome: Outcome, failures: &mut Vec<String>| -> bool {
        match outcome {
            Outcome::Accepted(a) => return a,
            Outcome::Failed(f) => failures.push(f),
            Outcome::Known(k, f) if strict => {
                failures.push(format!("{f} [known: {}]", KNOWN_PANICS[k].1))
            }
            Outcome::Known(k, f) => {
                if known[k].0 == 0 {
                    known[k].1 = f;
                }
                known[k].0 += 1;
            }
        }
        false
    };
    let mut seeds = Vec::new();
    let mut worker = Worker::spawn(target.entry);
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let data = std::fs::read(path).expect("read corpus file");
        let accepted = tally(call(&target, &mut worker, &name, &data), &mut failures);
        if name.starts_with("ok_") {
            if !accepted {
                failures.push(format!("{name}: valid seed rejected by the loader"));
            }
            seeds.push((name, data));
        }
    }
    assert!(!seeds.is_empty(), "{}: no ok_ seeds", dir.display());

    let iters = std::env::var("EDGELLM_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERS);
    let start = Instant::now();
    let mut cases = 0usize;
    let mut accepted = 0usize;
    for (seed_index, (name, data)) in seeds.iter().enumerate() {
        let seed_start = Instant::now();
        let mut m = Mutator::new(target.layout, data, 0x5eed_0000 + seed_index as u64);
        for i in 0..iters {
            let input = m.next_case();
            let label = format!("{name}#{i}");
            if !strict && KNOWN_ABORTS.iter().any(|(case, _)| *case == label) {
                continue;
            }
            cases += 1;
            accepted += usize::from(tally(
                call(&target, &mut worker, &label, &input),
                &mut failures,
            ));
        }
        eprintln!(
            "{}: {name}: {iters} mutants in {:.2?}",
            target.name,
            seed_start.elapsed()
        );
    }
    eprintln!(
        "{}: {} corpus files, {cases} mutants ({accepted} accepted) in {:.2?}",
        target.name,
        files.len(),
        start.elapsed()
    );
    for ((count, first), (_, what)) in known.iter().zip(KNOWN_PANICS) {
        if *count > 0 {
            eprintln!(
                "{}: tolerated {count} known panics ({what}); first: {first}",
                target.name
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} loader failures ({}):\n{}",
        target.name,
        failures.len(),
        failures.join("\n")
    );
}

/// What one input did.
enum Outcome {
    /// Returned normally; whether the loader accepted the input.
    Accepted(bool),
    /// Panicked at the place of a [`KNOWN_PANICS`] entry (its index), with the description.
    Known(usize, String),
    /// Panicked elsewhere or hung: the description, with where the input was saved.
    Failed(String),
}

/// Runs one input on the worker under `catch_unwind`, saving inputs that panic or hang.
fn call(target: &Target, worker: &mut Worker, label: &str, data: &[u8]) -> Outcome {
    if std::env::var_os("EDGELLM_FUZZ_VERBOSE").is_some() {
        eprintln!("{}: {label} ({} bytes)", target.name, data.len());
    }
    let (problem, location) = match worker.run(data) {
        Some(Ok(accepted)) => return Outcome::Accepted(accepted),
        Some(Err(panic)) => panic,
        None => {
            // The stuck thread cannot be stopped; it is left behind and a fresh worker is used.
            *worker = Worker::spawn(target.entry);
            (
                format!("no result after {SLOW_INPUT:?} (hang)"),
                String::new(),
            )
        }
    };
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz_failures")
        .join(target.name);
    let file = out.join(label.replace(['#', '/'], "_"));
    let saved = std::fs::create_dir_all(&out).and_then(|_| std::fs::write(&file, data));
    let at = match saved {
        Ok(()) => file.display().to_string(),
        Err(e) => format!("(not saved: {e})"),
    };
    let description = format!("{label}: {problem}; input saved to {at}");
    match KNOWN_PANICS
        .iter()
        .position(|(place, _)| !location.is_empty() && location.contains(place))
    {
        Some(k) => Outcome::Known(k, description),
        None => Outcome::Failed(description),
    }
}

/// A panic as recorded by the hook: (message with location, location).
type PanicInfo = (String, String);

/// A thread that runs the entry point on inputs it is sent, so that a hang can be detected with
/// a timeout instead of stalling the test run.
struct Worker {
    jobs: mpsc::Sender<Vec<u8>>,
    results: mpsc::Receiver<Result<bool, PanicInfo>>,
}

impl Worker {
    fn spawn(entry: fn(&[u8]) -> bool) -> Worker {
        let (jobs, job_rx) = mpsc::channel::<Vec<u8>>();
        let (result_tx, results) = mpsc::channel();
        std::thread::spawn(move || {
            for data in job_rx {
                IN_FUZZ_CALL.with(|c| c.set(true));
                let result = catch_unwind(AssertUnwindSafe(|| entry(&data)));
                IN_FUZZ_CALL.with(|c| c.set(false));
                let result = result.map_err(|_| {
                    LAST_PANIC
                        .with(|p| p.borrow_mut().take())
                        .unwrap_or_else(|| ("panic".into(), String::new()))
                });
                if result_tx.send(result).is_err() {
                    break;
                }
            }
        });
        Worker { jobs, results }
    }

    /// The entry's result, or `None` when it has not returned within [`SLOW_INPUT`].
    fn run(&self, data: &[u8]) -> Option<Result<bool, PanicInfo>> {
        self.jobs.send(data.to_vec()).ok()?;
        self.results.recv_timeout(SLOW_INPUT).ok()
    }
}

thread_local! {
    static IN_FUZZ_CALL: Cell<bool> = const { Cell::new(false) };
    /// The last panic inside a fuzz call on this thread: (message with location, location).
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Records panics raised inside a fuzz call instead of printing thousands of them; panics
/// elsewhere (a failing assertion) still reach the default hook.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_FUZZ_CALL.with(Cell::get) {
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                LAST_PANIC
                    .with(|p| *p.borrow_mut() = Some((format!("panicked: {msg} at {at}"), at)));
            } else {
                default(info);
            }
        }));
    });
}

/// SplitMix64: tiny, seedable, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Counts, lengths and offsets that probe overflow and allocation checks.
const INTERESTING_U64: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    255,
    256,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 62,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];
/// GGUF value and ggml type tags around the valid range, plus extremes.
const INTERESTING_U32: &[u32] = &[
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    30,
    39,
    99,
    0x7fff_ffff,
    u32::MAX,
];

/// Produces the mutants of one seed.
struct Mutator {
    rng: Rng,
    layout: Layout,
    seed: Vec<u8>,
    /// GGUF: (position, width) of every integer field of the seed's header.
    fields: Vec<(usize, usize)>,
    /// JSON (or the safetensors header): the parsed document and the path of every node.
    json: Option<(Value, Vec<Vec<Key>>)>,
    /// Safetensors: bytes after the header (the data section).
    tail: Vec<u8>,
}

#[derive(Clone)]
enum Key {
    Field(String),
    Index(usize),
}

impl Mutator {
    fn new(layout: Layout, seed: &[u8], rng_seed: u64) -> Mutator {
        let mut m = Mutator {
            rng: Rng(rng_seed),
            layout,
            seed: seed.to_vec(),
            fields: Vec::new(),
            json: None,
            tail: Vec::new(),
        };
        match layout {
            Layout::Gguf => m.fields = gguf_fields(seed),
            Layout::Json => m.json = serde_json::from_slice(seed).ok().map(with_paths),
            Layout::Safetensors => {
                let n = seed
                    .get(..8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize);
                if let Some(header) = n.and_then(|n| seed.get(8..8 + n)) {
                    m.json = serde_json::from_slice(header).ok().map(with_paths);
                    m.tail = seed[8 + header.len()..].to_vec();
                }
            }
        }
        m
    }

    /// The next mutant: half of the time a structural edit (JSON node or GGUF header field),
    /// then one to four byte-level edits or none.
    fn next_case(&mut self) -> Vec<u8> {
        let structural = self.rng.next().is_multiple_of(2);
        let mut data = match (&self.json, structural) {
            (Some(_), true) => self.json_case(),
            _ => self.seed.clone(),
        };
        if structural && self.layout == Layout::Gguf && !self.fields.is_empty() {
            let (pos, width) = self.rng.pick(&self.fields);
            write_int(&mut data, pos, width, &mut self.rng);
        }
        let byte_edits = if structural {
            self.rng.next() % 2
        } else {
            1 + self.rng.next() % MAX_STACKED_MUTATIONS
        };
        for _ in 0..byte_edits {
            self.byte_edit(&mut data);
        }
        data
    }

    fn json_case(&mut self) -> Vec<u8> {
        let (doc, paths) = self.json.as_ref().expect("json seed");
        let mut doc = doc.clone();
        for _ in 0..1 + self.rng.next() % 2 {
            let path = &paths[self.rng.below(paths.len())];
            mutate_json_node(&mut doc, path, &mut self.rng);
        }
        let text = serde_json::to_vec(&doc).expect("serialize JSON");
        if self.layout == Layout::Safetensors {
            let mut out = (text.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&text);
            out.extend_from_slice(&self.tail);
            out
        } else {
            text
        }
    }

    fn byte_edit(&mut self, data: &mut Vec<u8>) {
        let rng = &mut self.rng;
        if data.is_empty() {
            data.push(rng.next() as u8);
            return;
        }
        let at = rng.below(data.len());
        match rng.next() % 7 {
            0 => data.truncate(at),
            1 => data[at] ^= 1 << (rng.next() % 8),
            2 => data[at] = rng.pick(&[0u8, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'[', b'0', b'-']),
            3 => write_int(data, at, 4, rng),
            4 => write_int(data, at, 8, rng),
            5 => {
                let end = (at + 1 + rng.below(64)).min(data.len());
                data.drain(at..end);
            }
            _ => {
                let from = rng.below(data.len());
                let end = (from + 1 + rng.below(64)).min(data.len());
                let chunk = data[from..end].to_vec();
                data.splice(at..at, chunk);
            }
        }
    }
}

/// Overwrites a `width`-byte little-endian integer at `pos` (clipped to the buffer) with an
/// interesting value, or nudges the value that is there.
fn write_int(data: &mut [u8], pos: usize, width: usize, rng: &mut Rng) {
    let end = (pos + width).min(data.len());
    if pos >= end {
        return;
    }
    let old = data[pos..end]
        .iter()
        .rev()
        .fold(0u64, |a, &b| (a << 8) | u64::from(b));
    let value = match rng.next() % 4 {
        0 if width == 4 => u64::from(rng.pick(INTERESTING_U32)),
        0 | 1 => rng.pick(INTERESTING_U64),
        2 => old.wrapping_add(1 + rng.next() % 16),
        _ => old.wrapping_sub(1 + rng.next() % 16),
    };
    data[pos..end].copy_from_slice(&value.to_le_bytes()[..end - pos]);
}

/// JSON values that probe type checks, integer ranges and the names loaders match on.
fn interesting_json(rng: &mut Rng) -> Value {
    use serde_json::json;
    match rng.next() % 4 {
        0 => rng
            .pick(&[
                0i64,
                -1,
                1,
                2,
                3,
                7,
                1 << 31,
                1 << 32,
                1 << 53,
                i64::MAX,
                i64::MIN,
            ])
            .into(),
        1 => rng.pick(&[u64::MAX, 1 << 63, 1 << 40]).into(),
        2 => rng.pick(&[0.5f64, -1e300, 1e300, 1e-300, 4.0]).into(),
        _ => match rng.next() % 8 {
            0 => Value::Null,
            1 => json!(true),
            2 => json!([]),
            3 => json!({}),
            4 => json!(""),
            _ => json!(rng.pick(&[
                "llama",
                "mistral",
                "qwen2",
                "qwen3",
                "gemma3",
                "gemma3_text",
                "F32",
                "F16",
                "BF16",
                "I64",
                "sliding_attention",
                "full_attention",
                "llama3",
                "linear",
                "BPE",
                "WordPiece",
                "Unigram",
                "ByteLevel",
                "Metaspace",
                "Sequence",
                "<|im_end|>",
                "<unk>",
                "▁",
                "\u{0}",
                "a b c",
            ])),
        },
    }
}

/// Edits the node at `path`: replaced by an interesting value, removed from its parent,
/// duplicated inside its array, or wrapped in an array.
fn mutate_json_node(doc: &mut Value, path: &[Key], rng: &mut Rng) {
    let Some((last, parent_path)) = path.split_last() else {
        *doc = interesting_json(rng);
        return;
    };
    let Some(parent) = parent_path.iter().try_fold(doc, |v, k| match k {
        Key::Field(f) => v.get_mut(f.as_str()),
        Key::Index(i) => v.get_mut(*i),
    }) else {
        return;
    };
    match (parent, last) {
        (Value::Object(o), Key::Field(f)) => match rng.next() % 5 {
            0 => {
                o.remove(f.as_str());
            }
            1 => {
                if let Some(v) = o.get_mut(f.as_str()) {
                    *v = Value::Array(vec![v.take()]);
                }
            }
            _ => {
                o.insert(f.clone(), interesting_json(rng));
            }
        },
        (Value::Array(a), Key::Index(i)) if *i < a.len() => match rng.next() % 5 {
            0 => {
                a.remove(*i);
            }
            1 => {
                let v = a[*i].clone();
                a.insert(*i, v);
            }
            _ => a[*i] = interesting_json(rng),
        },
        _ => {}
    }
}

/// A document together with the path of every node in it (the root is the empty path).
fn with_paths(doc: Value) -> (Value, Vec<Vec<Key>>) {
    fn walk(v: &Value, path: &mut Vec<Key>, out: &mut Vec<Vec<Key>>) {
        out.push(path.clone());
        match v {
            Value::Object(o) => {
                for (k, child) in o {
                    path.push(Key::Field(k.clone()));
                    walk(child, path, out);
                    path.pop();
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    path.push(Key::Index(i));
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut paths = Vec::new();
    walk(&doc, &mut Vec::new(), &mut paths);
    (doc, paths)
}

/// (position, width) of every integer field in a GGUF header: counts, string lengths, value
/// types, array element types and counts, tensor dims, types and offsets. The walk stops at the
/// first thing it cannot follow (seeds are valid, so that is the data section).
fn gguf_fields(b: &[u8]) -> Vec<(usize, usize)> {
    struct Walk<'a> {
        b: &'a [u8],
        pos: usize,
        fields: Vec<(usize, usize)>,
        /// False inside arrays: the 400 string lengths of a vocabulary would drown the few
        /// counts and tags that matter (byte edits still reach them).
        record: bool,
    }
    impl Walk<'_> {
        fn int(&mut self, width: usize) -> Option<u64> {
            let s = self.b.get(self.pos..self.pos + width)?;
            if self.record {
                self.fields.push((self.pos, width));
            }
            self.pos += width;
            Some(s.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
        }
        fn skip(&mut self, n: u64) -> Option<()> {
            self.pos = self
                .pos
                .checked_add(usize::try_from(n).ok()?)
                .filter(|&p| p <= self.b.len())?;
            Some(())
        }
        fn string(&mut self) -> Option<()> {
            let n = self.int(8)?;
            self.skip(n)
        }
        fn value(&mut self, ty: u64) -> Option<()> {
            match ty {
                0 | 1 | 7 => self.skip(1),
                2 | 3 => self.skip(2),
                4..=6 => self.skip(4),
                10..=12 => self.skip(8),
                8 => self.string(),
                9 => {
                    let elem = self.int(4)?;
                    let n = self.int(8)?;
                    let record = std::mem::replace(&mut self.record, false);
                    let walked = (0..n).try_for_each(|_| self.value(elem));
                    self.record = record;
                    walked
                }
                _ => None,
            }
        }
    }
    let mut w = Walk {
        b,
        pos: 4,
        fields: Vec::new(),
        record: true,
    };
    let _ = (|| -> Option<()> {
        w.int(4)?;
        let n_tensors = w.int(8)?;
        let n_kv = w.int(8)?;
        for _ in 0..n_kv {
            w.string()?;
            let ty = w.int(4)?;
            w.value(ty)?;
        }
        for _ in 0..n_tensors {
            w.string()?;
            let dims = w.int(4)?;
            for _ in 0..dims {
                w.int(8)?;
            }
            w.int(4)?;
            w.int(8)?;
        }
        Some(())
    })();
    w.fields
}
