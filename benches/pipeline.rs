//! Throughput of the object pipeline and of uploads, run by `scripts/bench` (`harness = false`:
//! a plain `main`, no benchmark framework).
//!
//! 1. Generates two inputs in a temporary directory: pgbench_accounts rows as `COPY` text (what
//!    `pgbench -i` loads: very compressible) and mixed "orders" rows (random ids, timestamps,
//!    amounts, words: about 2.6:1 under zstd -3), from a fixed-seed PRNG so every run sees the
//!    same bytes.
//! 2. On one CPU (a thread pinned with `sched_setaffinity`), times [`Sealer`] (zstd level 3,
//!    AES-256-GCM, BLAKE3 of the plaintext), then each of its three parts alone (the same libzstd
//!    streaming encoder, BLAKE3, AES-256-GCM over the compressed bytes), the `zstd -3` command-line
//!    tool (under `taskset` on the same CPU), and [`Opener`].
//! 3. Starts s3s-fs on 127.0.0.1 (the test helper in `tests/support/s3.rs`) and times a raw
//!    multipart `S3Store::put`, then sealed puts through [`Repository`] into that server and into a
//!    local directory, with the process's peak RSS during each put. These phases are not pinned.
//!
//! Every figure is the best of `--runs` runs (3 by default) with the median beside it, in MB/s of
//! plaintext where MB is 10^6 bytes. The temporary files and the server go away when it ends.

#[allow(dead_code)]
#[path = "../tests/support/s3.rs"]
mod s3;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aead_stream::{NewStream, StreamBE32, StreamPrimitive};
use aes_gcm::{Aes256Gcm, KeyInit};
use anyhow::{Context, bail, ensure};
use lifeboat::keys::{MasterKey, Unlock};
use lifeboat::object::seal::TAG_LEN;
use lifeboat::object::{Cipher, HEADER_LEN, Opener, Sealer, WriteOptions};
use lifeboat::repository::Repository;
use lifeboat::secret::Secret;
use lifeboat::storage::local::LocalStore;
use lifeboat::storage::s3::S3Store;
use lifeboat::storage::{ObjectKey, ObjectStore, PutMode};
use zstd::stream::raw::{Encoder, InBuffer, Operation, OutBuffer};

use s3::{S3Server, S3ServerKind};

const MIB: usize = 1024 * 1024;
/// Plaintext is handed to the sealer in pieces of this size, as `seal_reader` reads it.
const PIECE: usize = 256 * 1024;

const USAGE: &str = "\
usage: scripts/bench [--runs N] [--cpu N] [--quick] [--no-upload]
  --runs N      timed runs per measurement; the best and the median are reported (default 3)
  --cpu N       the CPU the single-core measurements run on (default 0)
  --quick       inputs of 64 and 32 MiB instead of 512 and 256 MiB, for trying the benchmark out
  --no-upload   skip the S3 and local-directory uploads";

struct Args {
    runs: usize,
    cpu: usize,
    quick: bool,
    upload: bool,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut args = Args { runs: 3, cpu: 0, quick: false, upload: true };
        let mut given = std::env::args().skip(1);
        while let Some(arg) = given.next() {
            match arg.as_str() {
                // cargo bench passes --bench to every benchmark binary.
                "--bench" => {}
                "--quick" => args.quick = true,
                "--no-upload" => args.upload = false,
                "--runs" | "--cpu" => {
                    let value = given.next().with_context(|| format!("{arg} needs a number\n{USAGE}"))?;
                    let number: usize =
                        value.parse().with_context(|| format!("{arg} {value}: not a number\n{USAGE}"))?;
                    if arg == "--runs" {
                        ensure!(number > 0, "--runs must be at least 1");
                        args.runs = number;
                    } else {
                        args.cpu = number;
                    }
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        Ok(args)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let scale = if args.quick { 8 } else { 1 };
    let zstd_cli = zstd_cli_version()?;
    println!("lifeboat pipeline benchmark");
    println!("  CPU         {} ({} online)", cpu_model(), std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!("  load        {} (1, 5, 15 min) at start", load_average());
    println!("  zstd        libzstd {} (zstd crate) / CLI {zstd_cli}", zstd::zstd_safe::version_string());
    println!("  runs        {} per measurement; single-core phases on CPU {}", args.runs, args.cpu);

    let dir = tempfile::Builder::new().prefix("lifeboat-bench-").tempdir().context("create a temporary directory")?;
    println!("  inputs in   {} (removed at the end)", dir.path().display());

    let specs = [
        InputSpec {
            name: "pgbench rows",
            file: "pgbench_accounts.copy",
            target: 512 * MIB / scale,
            generate: pgbench_rows,
        },
        InputSpec { name: "orders rows", file: "orders.copy", target: 256 * MIB / scale, generate: order_rows },
    ];

    // The single-core phase runs on its own thread so that only it is pinned: the tokio runtime
    // of the upload phase, created afterwards on this thread, may use every CPU.
    let (cpu_results, inputs) = std::thread::scope(|scope| {
        scope.spawn(|| single_core_phase(&args, dir.path(), &specs)).join().expect("the single-core phase panicked")
    })?;

    let upload_results = if args.upload {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        Some(runtime.block_on(upload_phase(&args, dir.path(), &inputs))?)
    } else {
        None
    };

    print_summary(&args, &cpu_results, upload_results.as_deref());
    println!("  load        {} (1, 5, 15 min) at the end", load_average());
    dir.close().context("remove the temporary directory")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Inputs

struct InputSpec {
    name: &'static str,
    file: &'static str,
    target: usize,
    generate: fn(usize) -> (Vec<u8>, u64),
}

/// A generated input, on disk in the temporary directory.
struct Input {
    name: &'static str,
    path: PathBuf,
    len: u64,
}

/// splitmix64: tiny, fast, deterministic; plenty for data that only has to look realistic to zstd.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// pgbench_accounts as `COPY pgbench_accounts TO STDOUT` prints it after `pgbench -i`:
/// `aid \t bid \t abalance \t filler`, 100,000 accounts per branch, balances 0, and the char(84)
/// filler all blanks. Whole rows up to `target` bytes; returns the bytes and the row count.
fn pgbench_rows(target: usize) -> (Vec<u8>, u64) {
    let filler = " ".repeat(84);
    let mut out = Vec::with_capacity(target);
    let mut row = Vec::with_capacity(128);
    let mut aid: u64 = 1;
    loop {
        row.clear();
        writeln!(row, "{aid}\t{}\t0\t{filler}", (aid - 1) / 100_000 + 1).expect("writing to a Vec");
        if out.len() + row.len() > target {
            return (out, aid - 1);
        }
        out.extend_from_slice(&row);
        aid += 1;
    }
}

/// An orders table as COPY text: a random 64-bit hex id, a customer id, a creation time that
/// advances irregularly, an amount, a currency, a status, a random payment reference and a note
/// of two to six words. zstd -3 shrinks it about 2.6 times.
fn order_rows(target: usize) -> (Vec<u8>, u64) {
    const WORDS: &[&str] = &[
        "alpha", "amber", "anchor", "apple", "arrow", "autumn", "basket", "beacon", "berry", "blanket", "bottle",
        "bright", "bronze", "canvas", "carbon", "castle", "cedar", "chalk", "cherry", "circle", "cobalt", "copper",
        "cotton", "crystal", "delta", "desert", "dragon", "eagle", "ember", "falcon", "feather", "forest", "garden",
        "glacier", "golden", "granite", "harbor", "hazel", "island", "ivory", "jasper", "juniper", "kettle", "lantern",
        "lemon", "linen", "maple", "marble", "meadow", "mirror", "mosaic", "nectar", "olive", "orchid", "pebble",
        "pepper", "pillow", "planet", "quartz", "rapid", "river", "saddle", "saffron", "silver", "spruce", "stone",
        "summer", "thunder", "timber", "velvet", "walnut", "willow",
    ];
    const STATUSES: &[&str] = &[
        "pending",
        "paid",
        "paid",
        "shipped",
        "shipped",
        "shipped",
        "delivered",
        "delivered",
        "delivered",
        "delivered",
        "cancelled",
        "refunded",
    ];
    const CURRENCIES: &[&str] = &["EUR", "EUR", "USD", "USD", "USD", "GBP"];
    // Amounts in cents: mostly tens and hundreds, some thousands.
    const AMOUNT_BOUNDS: &[u64] = &[1_000, 10_000, 10_000, 100_000, 100_000, 100_000, 1_000_000];

    let mut rng = Rng(0x6c69_6665_626f_6174);
    let mut out = Vec::with_capacity(target);
    let mut row = Vec::with_capacity(256);
    // 2024-01-01 00:00:00 UTC, in milliseconds.
    let mut millis: u64 = 1_704_067_200_000;
    let mut rows = 0;
    loop {
        row.clear();
        millis += rng.below(2_000);
        let bound = *rng.pick(AMOUNT_BOUNDS);
        let cents = rng.below(bound);
        write!(
            row,
            "{:016x}\t{}\t{}\t{}.{:02}\t{}\t{}\t{:08x}-{:04x}\t",
            rng.next(),
            1 + rng.below(200_000),
            timestamp(millis),
            cents / 100,
            cents % 100,
            rng.pick(CURRENCIES),
            rng.pick(STATUSES),
            rng.next() as u32,
            rng.next() as u16,
        )
        .expect("writing to a Vec");
        for word in 0..2 + rng.below(5) {
            if word > 0 {
                row.push(b' ');
            }
            row.extend_from_slice(rng.pick(WORDS).as_bytes());
        }
        row.push(b'\n');
        if out.len() + row.len() > target {
            return (out, rows);
        }
        out.extend_from_slice(&row);
        rows += 1;
    }
}

/// `YYYY-MM-DD hh:mm:ss.mmm+00` for milliseconds since the Unix epoch.
fn timestamp(millis: u64) -> String {
    let seconds = millis / 1000;
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let time = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}+00",
        time / 3600,
        time / 60 % 60,
        time % 60,
        millis % 1000
    )
}

/// Howard Hinnant's days-to-civil-date algorithm (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

// ---------------------------------------------------------------------------------------------
// Single-core phase

struct CpuResult {
    name: &'static str,
    len: u64,
    stored_len: u64,
    cli_compressed_len: u64,
    seal: Timing,
    zstd_lib: Timing,
    blake3: Timing,
    aes_gcm: Timing,
    zstd_cli: Timing,
    open: Timing,
}

/// Best and median of several timed runs of the same work.
#[derive(Clone, Copy)]
struct Timing {
    best: Duration,
    median: Duration,
}

impl Timing {
    fn of(mut runs: Vec<Duration>) -> Timing {
        runs.sort();
        Timing { best: runs[0], median: runs[(runs.len() - 1) / 2] }
    }

    /// "812 (798)": MB/s (10^6 bytes per second) of `bytes`, best then median.
    fn rate(&self, bytes: u64) -> String {
        format!("{} ({})", mb_per_s(bytes, self.best), mb_per_s(bytes, self.median))
    }
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> String {
    let rate = bytes as f64 / 1e6 / elapsed.as_secs_f64();
    if rate >= 100.0 { format!("{rate:.0}") } else { format!("{rate:.1}") }
}

/// Runs `work` `runs` times, printing each run's rate, and returns the timing.
fn measure(
    label: &str,
    runs: usize,
    bytes: u64,
    mut work: impl FnMut() -> anyhow::Result<Duration>,
) -> anyhow::Result<Timing> {
    print!("    {label:<38}");
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        std::io::stdout().flush()?;
        let elapsed = work()?;
        print!(" {:>8}", mb_per_s(bytes, elapsed));
        times.push(elapsed);
    }
    println!("  MB/s");
    Ok(Timing::of(times))
}

fn single_core_phase(args: &Args, dir: &Path, specs: &[InputSpec]) -> anyhow::Result<(Vec<CpuResult>, Vec<Input>)> {
    pin_to_cpu(args.cpu)?;
    let master = MasterKey::generate();
    let opening_key = Arc::new(MasterKey::generate());
    let mut results = Vec::new();
    let mut inputs = Vec::new();
    for spec in specs {
        let started = Instant::now();
        let (data, rows) = (spec.generate)(spec.target);
        let path = dir.join(spec.file);
        std::fs::write(&path, &data).with_context(|| format!("write {}", path.display()))?;
        let len = data.len() as u64;
        println!(
            "\n  {}: {} rows, {len} bytes ({:.1} MiB), generated in {:.1} s",
            spec.name,
            rows,
            len as f64 / MIB as f64,
            started.elapsed().as_secs_f64()
        );
        let key = ObjectKey::new(format!("bench/{}", spec.file))?;

        // Untimed: an object to open, sealed under a key of its own and kept in memory, and the
        // bare zstd output to time the cipher on.
        let mut sealed = Vec::new();
        let stored_len = seal_all(&data, &key, &opening_key, &mut |chunk| sealed.extend_from_slice(&chunk))?;
        ensure!(sealed.len() as u64 == stored_len, "the sealer's summary disagrees with the bytes it emitted");
        let mut compressed = Vec::new();
        zstd_stream(&data, &mut |bytes| compressed.extend_from_slice(bytes))?;

        let seal = measure("lifeboat seal (zstd-3+AES-GCM+BLAKE3)", args.runs, len, || {
            let started = Instant::now();
            let stored = seal_all(&data, &key, &master, &mut |chunk| {
                std::hint::black_box(chunk);
            })?;
            let elapsed = started.elapsed();
            ensure!(stored == stored_len, "sealing the same input twice gave {stored} and {stored_len} bytes");
            Ok(elapsed)
        })?;
        let zstd_lib = measure("zstd-3 library alone", args.runs, len, || {
            let started = Instant::now();
            zstd_stream(&data, &mut |bytes| {
                std::hint::black_box(bytes);
            })?;
            Ok(started.elapsed())
        })?;
        let blake3 = measure("BLAKE3 of the plaintext alone", args.runs, len, || {
            let started = Instant::now();
            let mut hasher = blake3::Hasher::new();
            for piece in data.chunks(PIECE) {
                hasher.update(piece);
            }
            std::hint::black_box(hasher.finalize());
            Ok(started.elapsed())
        })?;
        let aes_gcm = measure("AES-256-GCM of the zstd output alone", args.runs, len, || {
            let started = Instant::now();
            std::hint::black_box(encrypt_stream(&compressed, &key, &master)?);
            Ok(started.elapsed())
        })?;
        let zstd_cli = measure("zstd -3 -T1 CLI (taskset)", args.runs, len, || zstd_cli_run(args.cpu, &path))?;
        let open = measure("lifeboat open (verify+decrypt+unzstd)", args.runs, len, || {
            let started = Instant::now();
            let mut plain = 0u64;
            open_all(&sealed, &key, &opening_key, &mut |bytes| plain += std::hint::black_box(bytes).len() as u64)?;
            let elapsed = started.elapsed();
            ensure!(plain == len, "opening yielded {plain} bytes, not {len}");
            Ok(elapsed)
        })?;
        let mut offset = 0;
        open_all(&sealed, &key, &opening_key, &mut |bytes| {
            assert_eq!(bytes, &data[offset..offset + bytes.len()], "opened bytes differ from the input");
            offset += bytes.len();
        })?;
        let cli_compressed_len = zstd_cli_compressed_len(&path)?;
        println!(
            "    sizes: sealed {stored_len} bytes ({:.2}x), zstd CLI {cli_compressed_len} bytes ({:.2}x); \
             round trip checked",
            len as f64 / stored_len as f64,
            len as f64 / cli_compressed_len as f64
        );

        results.push(CpuResult {
            name: spec.name,
            len,
            stored_len,
            cli_compressed_len,
            seal,
            zstd_lib,
            blake3,
            aes_gcm,
            zstd_cli,
            open,
        });
        inputs.push(Input { name: spec.name, path, len });
    }
    Ok((results, inputs))
}

/// Pins the calling thread (only) to `cpu`; threads it starts afterwards inherit the pinning.
fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    ensure!(cpu < libc::CPU_SETSIZE as usize, "--cpu {cpu} is out of range");
    // SAFETY: cpu_set_t is plain data for which all zeroes is the empty set; CPU_SET writes one bit
    // inside it (bounds checked above); sched_setaffinity only reads the set, and pid 0 means the
    // calling thread.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        bail!("pinning the benchmark thread to CPU {cpu}: {error} (see --cpu)");
    }
    Ok(())
}

/// Seals `data` as one object, fed in `PIECE`-sized pieces; returns the stored length.
fn seal_all(data: &[u8], key: &ObjectKey, master: &MasterKey, emit: &mut dyn FnMut(Vec<u8>)) -> anyhow::Result<u64> {
    let mut sealer = Sealer::new(key, Some(master), &WriteOptions::default());
    emit(sealer.header().to_vec());
    for piece in data.chunks(PIECE) {
        sealer.update(piece, emit)?;
    }
    let summary = sealer.finish(emit)?;
    Ok(summary.stored_len)
}

fn open_all(
    stored: &[u8],
    key: &ObjectKey,
    master: &Arc<MasterKey>,
    emit: &mut dyn FnMut(&[u8]),
) -> anyhow::Result<()> {
    let mut opener = Opener::new(key, Some(master.clone()));
    for piece in stored.chunks(PIECE) {
        opener.update(piece, emit)?;
    }
    opener.finish(emit)?;
    Ok(())
}

/// libzstd's streaming encoder at level 3, driven exactly as the sealer drives it (same pieces,
/// same 256 KiB output buffer), handing the compressed bytes to `sink`.
fn zstd_stream(data: &[u8], sink: &mut dyn FnMut(&[u8])) -> anyhow::Result<()> {
    let mut encoder = Encoder::new(WriteOptions::default().level)?;
    let mut out = vec![0u8; PIECE];
    for piece in data.chunks(PIECE) {
        let mut input = InBuffer::around(piece);
        while input.pos() < piece.len() {
            let mut output = OutBuffer::around(&mut out[..]);
            encoder.run(&mut input, &mut output)?;
            let produced = output.pos();
            sink(&out[..produced]);
        }
    }
    loop {
        let mut output = OutBuffer::around(&mut out[..]);
        let remaining = encoder.finish(&mut output, true)?;
        let produced = output.pos();
        sink(&out[..produced]);
        if remaining == 0 {
            return Ok(());
        }
    }
}

/// AES-256-GCM in the STREAM construction, as the sealer applies it: chunks of the default chunk
/// size copied into a buffer and sealed in place with a header-sized associated data. Returns the
/// sealed length.
fn encrypt_stream(compressed: &[u8], key: &ObjectKey, master: &MasterKey) -> anyhow::Result<u64> {
    let material = master.derive_object_key(&[0; 32], key.as_str());
    let stream: StreamBE32<Aes256Gcm> =
        StreamBE32::from_aead(Aes256Gcm::new((&material.key).into()), (&material.nonce_prefix).into());
    let header = [0u8; HEADER_LEN];
    let chunk_size = WriteOptions::default().chunk_size as usize;
    let chunks = compressed.len().div_ceil(chunk_size).max(1);
    let mut buffer = Vec::with_capacity(chunk_size + TAG_LEN);
    let mut sealed = 0u64;
    for (counter, piece) in compressed.chunks(chunk_size).enumerate() {
        buffer.clear();
        buffer.extend_from_slice(piece);
        stream
            .encrypt_in_place(counter as u32, counter + 1 == chunks, &header, &mut buffer)
            .map_err(|_| anyhow::anyhow!("AES-GCM refused a chunk"))?;
        sealed += buffer.len() as u64;
    }
    Ok(sealed)
}

/// `taskset -c CPU zstd -3 -T1 -c FILE > /dev/null`, timed by wall clock (process start included).
fn zstd_cli_run(cpu: usize, path: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = Command::new("taskset")
        .args(["-c", &cpu.to_string(), "zstd", "-3", "-T1", "-q", "-c"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("run taskset zstd (install util-linux and zstd)")?;
    let elapsed = started.elapsed();
    ensure!(status.success(), "zstd -3 on {} failed: {status}", path.display());
    Ok(elapsed)
}

fn zstd_cli_compressed_len(path: &Path) -> anyhow::Result<u64> {
    let mut child = Command::new("zstd")
        .args(["-3", "-T1", "-q", "-c"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("run zstd")?;
    let copied = std::io::copy(&mut child.stdout.take().expect("piped stdout"), &mut std::io::sink())?;
    ensure!(child.wait()?.success(), "zstd -3 on {} failed", path.display());
    Ok(copied)
}

fn zstd_cli_version() -> anyhow::Result<String> {
    let output = Command::new("zstd").arg("--version").output().context("run zstd --version (apt-get install zstd)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .split_whitespace()
        .find(|word| word.starts_with('v'))
        .map(|word| word.trim_end_matches(','))
        .unwrap_or("(unknown version)")
        .to_owned())
}

// ---------------------------------------------------------------------------------------------
// Upload phase

struct UploadResult {
    what: String,
    len: u64,
    timing: Timing,
    /// Highest VmHWM over the runs, and VmRSS just before the first run, in KiB.
    peak_rss_kib: Option<u64>,
    rss_before_kib: Option<u64>,
}

async fn upload_phase(args: &Args, dir: &Path, inputs: &[Input]) -> anyhow::Result<Vec<UploadResult>> {
    println!("\n  uploads (not pinned; s3s-fs on 127.0.0.1 stores into {})", std::env::temp_dir().display());
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    let mut results = Vec::new();

    // Raw multipart put: bytes straight from the file into the store, no sealing.
    let raw = &inputs[0];
    let settings = server.fresh_bucket().await;
    let part_size = settings.part_size;
    let store = S3Store::connect(settings).await?;
    let key = ObjectKey::new("bench/raw")?;
    results.push(
        timed_puts(&format!("raw S3Store::put ({} MiB parts)", part_size / MIB), raw, args.runs, async || {
            let file = tokio::fs::File::open(&raw.path).await?;
            store.put(&key, Box::new(file), PutMode::Overwrite).await?;
            Ok(())
        })
        .await?,
    );
    let stored = store.head(&key).await?.context("the raw object is missing after the put")?;
    ensure!(stored.size == raw.len, "the raw object holds {} bytes, not {}", stored.size, raw.len);
    store.delete(&key).await?;

    let passphrase = Unlock::Passphrase(Secret::new("lifeboat benchmark passphrase"));
    let s3_store: Arc<dyn ObjectStore> = Arc::new(S3Store::connect(server.fresh_bucket().await).await?);
    let local_root = dir.join("repository");
    std::fs::create_dir(&local_root)?;
    let local_store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(&local_root));
    for (target, store) in [("S3", s3_store), ("local dir", local_store)] {
        let repository =
            Repository::init(store, Cipher::Aes256Gcm, Some(&passphrase), "bench", WriteOptions::default()).await?;
        for input in inputs {
            let key = ObjectKey::new(format!("bench/{}", input.path.file_name().unwrap().to_string_lossy()))?;
            let what = format!("sealed put -> {target}, {}", input.name);
            results.push(
                timed_puts(&what, input, args.runs, async || {
                    let file = tokio::fs::File::open(&input.path).await?;
                    let summary = repository.put(&key, Box::new(file), PutMode::Overwrite).await?;
                    ensure!(
                        summary.plaintext_len == input.len,
                        "sealed {} bytes, not {}",
                        summary.plaintext_len,
                        input.len
                    );
                    Ok(())
                })
                .await?,
            );
            repository.store().delete(&key).await?;
        }
    }
    drop(server);
    Ok(results)
}

async fn timed_puts(
    what: &str,
    input: &Input,
    runs: usize,
    mut put: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<UploadResult> {
    print!("    {what:<38}");
    reset_peak_rss();
    let rss_before_kib = proc_status_kib("VmRSS");
    let mut peak_rss_kib = None;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        std::io::stdout().flush()?;
        let reset = reset_peak_rss();
        let started = Instant::now();
        put().await?;
        let elapsed = started.elapsed();
        if reset {
            peak_rss_kib = peak_rss_kib.max(proc_status_kib("VmHWM"));
        }
        print!(" {:>8}", mb_per_s(input.len, elapsed));
        times.push(elapsed);
    }
    println!("  MB/s");
    Ok(UploadResult { what: what.to_owned(), len: input.len, timing: Timing::of(times), peak_rss_kib, rss_before_kib })
}

/// Hands freed heap memory back to the system, so RSS reflects what is in use, then resets VmHWM
/// to the current RSS (Linux 4.0+). False when the kernel refuses the reset.
fn reset_peak_rss() -> bool {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A `kB` field of /proc/self/status, such as VmHWM (peak RSS) or VmRSS.
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Report

fn print_summary(args: &Args, cpu: &[CpuResult], uploads: Option<&[UploadResult]>) {
    let runs = args.runs;
    println!();
    println!("Single core (CPU {}), MB/s of plaintext (MB = 10^6 bytes), best of {runs} (median):", args.cpu);
    println!(
        "{:<13} {:>8}  {:<14} {:<14} {:<14} {:<14} {:>8} {:>9}",
        "input", "size", "lifeboat seal", "zstd-3 lib", "zstd -3 CLI", "open", "ratio", "CLI ratio"
    );
    for result in cpu {
        println!(
            "{:<13} {:>8}  {:<14} {:<14} {:<14} {:<14} {:>7.2}x {:>8.2}x",
            result.name,
            mib(result.len),
            result.seal.rate(result.len),
            result.zstd_lib.rate(result.len),
            result.zstd_cli.rate(result.len),
            result.open.rate(result.len),
            result.len as f64 / result.stored_len as f64,
            result.len as f64 / result.cli_compressed_len as f64,
        );
    }
    println!("Where the sealing time goes (best runs; the parts timed alone):");
    for result in cpu {
        let seconds = |timing: &Timing| timing.best.as_secs_f64();
        let parts = seconds(&result.zstd_lib) + seconds(&result.blake3) + seconds(&result.aes_gcm);
        println!(
            "  {:<13} seal {:.3} s = zstd {:.3} s + BLAKE3 {:.3} s + AES-256-GCM {:.3} s {:+.3} s rest",
            result.name,
            seconds(&result.seal),
            seconds(&result.zstd_lib),
            seconds(&result.blake3),
            seconds(&result.aes_gcm),
            seconds(&result.seal) - parts,
        );
    }
    println!(
        "  seal: Sealer (zstd level 3, AES-256-GCM in 1 MiB chunks, BLAKE3 of the plaintext) fed
    256 KiB pieces from memory, output discarded, on a thread pinned with sched_setaffinity.
  zstd-3 lib: the same libzstd streaming encoder alone, driven the same way. open: Opener on the
    sealed bytes. rest: chunking, copies and allocation in the sealer.
  zstd -3 CLI: `taskset -c {} zstd -3 -T1 -c FILE > /dev/null`, wall clock including process
    start, file in the page cache.
  ratio: plaintext / sealed size (header and tags included); CLI ratio: plaintext / zstd CLI output.",
        args.cpu
    );

    let Some(uploads) = uploads else { return };
    println!();
    println!("Uploads (not pinned), MB/s of plaintext (MB = 10^6 bytes), best of {runs} (median):");
    println!("{:<38} {:>8}  {:<14} peak RSS (before)", "upload", "size", "MB/s");
    for result in uploads {
        let peak = match (result.peak_rss_kib, result.rss_before_kib) {
            (Some(peak), Some(before)) => format!("{} ({})", kib(peak), kib(before)),
            _ => "n/a".to_owned(),
        };
        println!("{:<38} {:>8}  {:<14} {peak}", result.what, mib(result.len), result.timing.rate(result.len));
    }
    println!(
        "  Read from the generated file (tokio::fs::File, page cache); s3s-fs on 127.0.0.1 keeps its
    files in a temporary directory; the local directory is a LocalStore (fsynced). Sealed puts go
    through Repository::put (seal_reader on a blocking thread). Peak RSS: the process's VmHWM,
    reset before each run after returning freed memory to the system, highest over the runs;
    before: VmRSS before the first run."
    );
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / MIB as f64)
}

fn kib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
        .map_or_else(|| "unknown CPU".to_owned(), |(_, model)| model.trim().to_owned())
}

fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
