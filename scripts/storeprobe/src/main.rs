//! Damage / durability probe for redb and fjall, plus group-commit throughput.
//!
//! Subcommands:
//!   storeprobe all                      -- damage experiments + 2 throughput runs
//!   storeprobe damage                   -- damage experiments only
//!   storeprobe bench                    -- one throughput run
//!   storeprobe trial <store> <dir>      -- (internal) open a damaged copy, print state
//!
//! Every damaged open runs in a child process (`trial`); inside the child the open+read is
//! wrapped in std::panic::catch_unwind. A child that dies without reporting (abort, signal)
//! is CRASH, one that exceeds the timeout is HANG.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const N: usize = 20;
const VAL_LEN: usize = 100;
const TRIAL_TIMEOUT: Duration = Duration::from_secs(20);

const REDB_TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("log");
const REDB_BENCH: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("bench");

/// Where images and trials go: `STOREPROBE_DIR`, or `tmp/` here. Put it on the disk you mean
/// to measure (`/tmp` is often `tmpfs`, where `fdatasync` is free).
fn tmp_root() -> PathBuf {
    std::env::var_os("STOREPROBE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("tmp"))
}

fn key(i: usize) -> String {
    format!("k{i}")
}

fn val(i: usize) -> Vec<u8> {
    (0..VAL_LEN).map(|j| ((i * 31 + j * 7) % 251) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// Building the reference images
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Store {
    Redb,
    Fjall,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Redb => "redb",
            Store::Fjall => "fjall",
        }
    }
    fn parse(s: &str) -> Store {
        match s {
            "redb" => Store::Redb,
            "fjall" => Store::Fjall,
            _ => panic!("unknown store {s}"),
        }
    }
}

struct Scenario {
    name: String,
    store: Store,
    /// directory holding the final image (for redb: contains the single file `db.redb`)
    image: PathBuf,
}

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        let d = dst.join(e.file_name());
        if t.is_dir() {
            copy_dir(&e.path(), &d);
        } else if t.is_file() {
            fs::copy(e.path(), &d).unwrap();
        }
    }
}

/// In-memory image: per file, its length and its non-zero 4 KiB chunks. Writing a trial copy
/// from this keeps fjall's 32 MiB preallocated (sparse, mostly zero) journal cheap to copy.
type ImageCache = Vec<(PathBuf, u64, Vec<(u64, Vec<u8>)>)>;

fn load_image(root: &Path) -> ImageCache {
    let mut out = vec![];
    for f in list_files(root) {
        let data = fs::read(root.join(&f)).unwrap();
        let mut chunks = vec![];
        for (i, c) in data.chunks(4096).enumerate() {
            if c.iter().any(|&b| b != 0) {
                chunks.push(((i * 4096) as u64, c.to_vec()));
            }
        }
        out.push((f, data.len() as u64, chunks));
    }
    out
}

fn write_image(img: &ImageCache, dst: &Path) {
    use std::io::Seek;
    for (f, len, chunks) in img {
        let p = dst.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut fh = fs::File::create(&p).unwrap();
        for (off, c) in chunks {
            fh.seek(std::io::SeekFrom::Start(*off)).unwrap();
            fh.write_all(c).unwrap();
        }
        fh.set_len(*len).unwrap();
    }
}

fn list_files(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    fn rec(root: &Path, p: &Path, out: &mut Vec<PathBuf>) {
        let mut es: Vec<_> = fs::read_dir(p).unwrap().map(|e| e.unwrap()).collect();
        es.sort_by_key(|e| e.file_name());
        for e in es {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                rec(root, &e.path(), out);
            } else if t.is_file() {
                out.push(e.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    rec(root, root, &mut out);
    out
}

/// redb: 20 commits (default durability = Immediate). `live`: copy the file while the Database
/// is still open (crash-consistent image); otherwise copy after a clean drop.
fn build_redb(live: bool) -> Scenario {
    let name = if live { "redb-live" } else { "redb-closed" };
    let work = tmp_root().join(format!("build-{name}"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();
    let path = work.join("db.redb");
    let image = tmp_root().join(format!("image-{name}"));
    let _ = fs::remove_dir_all(&image);
    fs::create_dir_all(&image).unwrap();
    {
        let db = redb::Database::create(&path).unwrap();
        for i in 0..N {
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(REDB_TABLE).unwrap();
                t.insert(key(i).as_str(), val(i).as_slice()).unwrap();
            }
            tx.commit().unwrap();
            // verify state after each commit
            let rtx = db.begin_read().unwrap();
            let t = rtx.open_table(REDB_TABLE).unwrap();
            assert_eq!(t.len().unwrap() as usize, i + 1);
        }
        if live {
            fs::copy(&path, image.join("db.redb")).unwrap();
        }
    }
    if !live {
        fs::copy(&path, image.join("db.redb")).unwrap();
    }
    // sanity: the undamaged image must open to the exact final state
    Scenario { name: name.into(), store: Store::Redb, image }
}

/// fjall: 20 batches, each committed with PersistMode::SyncAll.
/// `flush_at`: if Some(k), after commit k the memtable is flushed to a segment (so that the image
/// contains a segment + journal). `live`: copy while open.
fn build_fjall(live: bool, flush_at: Option<usize>) -> Scenario {
    let name = format!(
        "fjall-{}{}",
        if flush_at.is_some() { "flushed-" } else { "" },
        if live { "live" } else { "closed" }
    );
    let work = tmp_root().join(format!("build-{name}"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();
    let dbdir = work.join("ks");
    let image = tmp_root().join(format!("image-{name}"));
    let _ = fs::remove_dir_all(&image);
    {
        let ks = fjall::Config::new(&dbdir).open().unwrap();
        let p = ks
            .open_partition("p", fjall::PartitionCreateOptions::default())
            .unwrap();
        for i in 0..N {
            let mut b = ks.batch().durability(Some(fjall::PersistMode::SyncAll));
            b.insert(&p, key(i).as_bytes(), val(i));
            b.commit().unwrap();
            ks.persist(fjall::PersistMode::SyncAll).unwrap();
            assert_eq!(p.len().unwrap(), i + 1);
            if flush_at == Some(i) {
                p.rotate_memtable_and_wait().unwrap();
                ks.persist(fjall::PersistMode::SyncAll).unwrap();
            }
        }
        if live {
            copy_dir(&dbdir, &image);
        }
    }
    if !live {
        // give background threads a moment to finish after drop
        std::thread::sleep(Duration::from_millis(200));
        copy_dir(&dbdir, &image);
    }
    Scenario { name, store: Store::Fjall, image }
}

// ---------------------------------------------------------------------------------------------
// Child: open + read
// ---------------------------------------------------------------------------------------------

enum Read_ {
    State(BTreeMap<String, Vec<u8>>),
    Err(String),
}

fn read_redb(dir: &Path) -> Read_ {
    let db = match redb::Database::open(dir.join("db.redb")) {
        Ok(d) => d,
        Err(e) => return Read_::Err(format!("open: {e}")),
    };
    let rtx = match db.begin_read() {
        Ok(t) => t,
        Err(e) => return Read_::Err(format!("begin_read: {e}")),
    };
    let t = match rtx.open_table(REDB_TABLE) {
        Ok(t) => t,
        // The table is created by the first commit, so "no table" is the pre-commit-1 state.
        Err(redb::TableError::TableDoesNotExist(_)) => return Read_::State(BTreeMap::new()),
        Err(e) => return Read_::Err(format!("open_table: {e}")),
    };
    let mut m = BTreeMap::new();
    let it = match t.iter() {
        Ok(i) => i,
        Err(e) => return Read_::Err(format!("iter: {e}")),
    };
    for r in it {
        match r {
            Ok((k, v)) => {
                m.insert(k.value().to_string(), v.value().to_vec());
            }
            Err(e) => return Read_::Err(format!("iter item: {e}")),
        }
    }
    Read_::State(m)
}

fn read_fjall(dir: &Path) -> Read_ {
    let ks = match fjall::Config::new(dir).open() {
        Ok(k) => k,
        Err(e) => return Read_::Err(format!("open: {e}")),
    };
    // Only read partitions that exist: do not create one (that would be a write).
    if !ks.partition_exists("p") {
        return Read_::State(BTreeMap::new());
    }
    let p = match ks.open_partition("p", fjall::PartitionCreateOptions::default()) {
        Ok(p) => p,
        Err(e) => return Read_::Err(format!("open_partition: {e}")),
    };
    let mut m = BTreeMap::new();
    for r in p.iter() {
        match r {
            Ok((k, v)) => {
                m.insert(String::from_utf8_lossy(&k).into_owned(), v.to_vec());
            }
            Err(e) => return Read_::Err(format!("iter item: {e}")),
        }
    }
    Read_::State(m)
}

fn child_trial(store: &str, dir: &str) {
    let store = Store::parse(store);
    let dir = PathBuf::from(dir);
    let panics: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(vec![]));
    {
        let panics = panics.clone();
        std::panic::set_hook(Box::new(move |info| {
            let th = std::thread::current().name().unwrap_or("?").to_string();
            panics
                .lock()
                .map(|mut v| v.push(format!("[thread {th}] {info}")))
                .ok();
        }));
    }
    let r = std::panic::catch_unwind(|| match store {
        Store::Redb => read_redb(&dir),
        Store::Fjall => read_fjall(&dir),
    });
    // small grace period to let fjall background threads panic/finish (none observed expected)
    let bg = |p: &Arc<Mutex<Vec<String>>>| p.lock().map(|v| v.clone()).unwrap_or_default();
    let oneline = |s: &str| s.replace('\n', " | ");
    let mut out = String::new();
    match r {
        Err(_) => {
            let msgs = bg(&panics);
            out.push_str(&format!("PANIC\t{}\n", oneline(&msgs.join(" ;; "))));
        }
        Ok(Read_::Err(e)) => {
            out.push_str(&format!("ERR\t{}\n", oneline(&e)));
        }
        Ok(Read_::State(m)) => {
            let bad: Vec<&String> = m
                .iter()
                .filter(|(k, v)| {
                    let idx = k.strip_prefix('k').and_then(|s| s.parse::<usize>().ok());
                    match idx {
                        Some(i) if i < N => **v != val(i),
                        _ => true,
                    }
                })
                .map(|(k, _)| k)
                .collect();
            let keys: Vec<&str> = m.keys().map(|s| s.as_str()).collect();
            out.push_str(&format!(
                "STATE\t{}\t{}\t{}\n",
                keys.join(","),
                bad.len(),
                bad.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
            ));
        }
    }
    let msgs = bg(&panics);
    if !msgs.is_empty() && !out.starts_with("PANIC") {
        out.push_str(&format!("BGPANIC\t{}\n", oneline(&msgs.join(" ;; "))));
    }
    print!("{out}");
    std::io::stdout().flush().unwrap();
    // Exit without running destructors to avoid waiting on background threads.
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------------
// Parent: damage experiments
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Damage {
    Flip(u64),
    Truncate(u64),
    Append(u64 /*seed*/),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Refused,
    Panic,
    Exact,
    Older,
    Other,
    Crash,
    Hang,
}

const OUTCOMES: [Outcome; 7] = [
    Outcome::Refused,
    Outcome::Panic,
    Outcome::Exact,
    Outcome::Older,
    Outcome::Other,
    Outcome::Crash,
    Outcome::Hang,
];

struct TrialResult {
    file: String,
    damage: Damage,
    outcome: Outcome,
    detail: String,
    bgpanic: bool,
}

fn sample_offsets(size: u64) -> Vec<u64> {
    let mut v: Vec<u64> = vec![];
    if size <= 2000 + 16384 {
        v.extend(0..size);
    } else {
        v.extend(0..8192);
        v.extend(size - 8192..size);
        for i in 0..2000u64 {
            v.push(i * size / 2000);
        }
        v.sort();
        v.dedup();
    }
    v
}

fn xorshift(mut x: u64) -> impl FnMut() -> u8 {
    if x == 0 {
        x = 0x9E3779B97F4A7C15;
    }
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    }
}

fn apply_damage(path: &Path, d: &Damage) {
    match d {
        Damage::Flip(off) => {
            let mut f = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(*off)).unwrap();
            let mut b = [0u8; 1];
            f.read_exact(&mut b).unwrap();
            b[0] ^= 0xff;
            f.seek(std::io::SeekFrom::Start(*off)).unwrap();
            f.write_all(&b).unwrap();
        }
        Damage::Truncate(off) => {
            let f = fs::OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(*off).unwrap();
        }
        Damage::Append(seed) => {
            let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
            let mut r = xorshift(*seed);
            let g: Vec<u8> = (0..100).map(|_| r()).collect();
            f.write_all(&g).unwrap();
        }
    }
}

fn run_child(store: Store, dir: &Path) -> (Outcome, String, bool, Option<String>) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .arg("trial")
        .arg(store.name())
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let h = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let h2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > TRIAL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let out = h.join().unwrap();
    let err = h2.join().unwrap();
    let Some(status) = status else {
        return (Outcome::Hang, "timeout".into(), false, None);
    };
    let mut lines = out.lines();
    let first = lines.next().unwrap_or("");
    let bgpanic = out.contains("BGPANIC");
    let mut parts = first.split('\t');
    match parts.next() {
        Some("PANIC") => (Outcome::Panic, parts.next().unwrap_or("").to_string(), bgpanic, None),
        Some("ERR") => (Outcome::Refused, parts.next().unwrap_or("").to_string(), bgpanic, None),
        Some("STATE") => {
            let keys = parts.next().unwrap_or("").to_string();
            let nbad: usize = parts.next().unwrap_or("0").parse().unwrap_or(0);
            let bad = parts.next().unwrap_or("").to_string();
            // reuse detail field: "keys|nbad|bad"
            (Outcome::Exact, format!("{keys}|{nbad}|{bad}"), bgpanic, Some("state".into()))
        }
        _ => (
            Outcome::Crash,
            format!(
                "status={status:?} stderr={}",
                err.lines().last().unwrap_or("").chars().take(200).collect::<String>()
            ),
            bgpanic,
            None,
        ),
    }
}

fn classify_state(detail: &str) -> (Outcome, String) {
    let mut it = detail.split('|');
    let keys_s = it.next().unwrap_or("");
    let nbad: usize = it.next().unwrap_or("0").parse().unwrap_or(0);
    let bad = it.next().unwrap_or("");
    let mut keys: Vec<String> = if keys_s.is_empty() {
        vec![]
    } else {
        keys_s.split(',').map(|s| s.to_string()).collect()
    };
    keys.sort();
    if nbad > 0 {
        return (
            Outcome::Other,
            format!("opened with {} keys, {} with wrong value/unknown key ({})", keys.len(), nbad, bad),
        );
    }
    for j in (0..=N).rev() {
        let mut st: Vec<String> = (0..j).map(key).collect();
        st.sort();
        if st == keys {
            if j == N {
                return (Outcome::Exact, format!("opened with {N} of {N} keys"));
            } else {
                return (
                    Outcome::Older,
                    format!("opened with {j} of {N} keys = state after commit #{j}"),
                );
            }
        }
    }
    (
        Outcome::Other,
        format!("opened with {} keys not matching any commit: [{}]", keys.len(), keys.join(",")),
    )
}

fn damage_experiments(report: &mut String) {
    let scenarios = vec![
        build_redb(true),
        build_redb(false),
        build_fjall(true, None),
        build_fjall(true, Some(9)),
        build_fjall(false, Some(9)),
    ];
    report.push_str("## Damage experiments\n\n");
    report.push_str(&format!(
        "N={N} commits, one key `k{{i}}` -> {VAL_LEN}-byte value per commit. Images:\n\n"
    ));
    for sc in &scenarios {
        report.push_str(&format!("- **{}** files:", sc.name));
        for f in list_files(&sc.image) {
            let sz = fs::metadata(sc.image.join(&f)).unwrap().len();
            report.push_str(&format!(" `{}` ({} B);", f.display(), sz));
        }
        report.push('\n');
    }
    report.push('\n');

    // sanity: undamaged images
    report.push_str("Undamaged image sanity check (copy opened as-is):\n\n");
    for sc in &scenarios {
        let dir = tmp_root().join("sanity");
        let _ = fs::remove_dir_all(&dir);
        copy_dir(&sc.image, &dir);
        let (o, d, _, st) = run_child(sc.store, &dir);
        let (o, d) = if st.is_some() { classify_state(&d) } else { (o, d) };
        report.push_str(&format!("- {}: {:?} ({})\n", sc.name, o, d));
        eprintln!("sanity {}: {:?} {}", sc.name, o, d);
    }
    report.push('\n');

    let mut table = String::new();
    table.push_str("| scenario | file | damage | trials | REFUSED | PANIC | EXACT | OLDER | OTHER | CRASH | HANG | bg-thread panic |\n");
    table.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let mut summary = String::new();
    summary.push_str("| scenario | damage | trials | REFUSED | PANIC | EXACT | OLDER | OTHER | CRASH | HANG |\n");
    summary.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let mut examples = String::new();

    for sc in &scenarios {
        let files = list_files(&sc.image);
        let mut all: Vec<(String, Damage)> = vec![];
        for f in &files {
            let sz = fs::metadata(sc.image.join(f)).unwrap().len();
            let fs_ = f.to_string_lossy().to_string();
            let offs = sample_offsets(sz);
            for &o in &offs {
                all.push((fs_.clone(), Damage::Flip(o)));
            }
            for &o in &offs {
                all.push((fs_.clone(), Damage::Truncate(o)));
            }
            for s in 1..=5u64 {
                all.push((fs_.clone(), Damage::Append(s * 0x1234567)));
            }
        }
        eprintln!("scenario {}: {} trials", sc.name, all.len());
        let t0 = Instant::now();
        let results: Arc<Mutex<Vec<TrialResult>>> = Arc::new(Mutex::new(vec![]));
        let next = Arc::new(Mutex::new(0usize));
        let all = Arc::new(all);
        let cache = Arc::new(load_image(&sc.image));
        let mut hs = vec![];
        for w in 0..2 {
            let all = all.clone();
            let results = results.clone();
            let next = next.clone();
            let cache = cache.clone();
            let store = sc.store;
            hs.push(std::thread::spawn(move || loop {
                let idx = {
                    let mut n = next.lock().unwrap();
                    let i = *n;
                    *n += 1;
                    i
                };
                if idx >= all.len() {
                    break;
                }
                if idx % 2000 == 0 {
                    eprintln!("  {idx}/{}", all.len());
                }
                let (file, dmg) = &all[idx];
                let dir = tmp_root().join(format!("trial-{w}"));
                let _ = fs::remove_dir_all(&dir);
                write_image(&cache, &dir);
                apply_damage(&dir.join(file), dmg);
                let (mut o, mut d, bg, st) = run_child(store, &dir);
                if st.is_some() {
                    let (o2, d2) = classify_state(&d);
                    o = o2;
                    d = d2;
                }
                results.lock().unwrap().push(TrialResult {
                    file: file.clone(),
                    damage: dmg.clone(),
                    outcome: o,
                    detail: d,
                    bgpanic: bg,
                });
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
        eprintln!("  done in {:.1}s", t0.elapsed().as_secs_f64());
        let mut results = std::mem::take(&mut *results.lock().unwrap());
        results.sort_by(|a, b| {
            (a.file.clone(), dkind(&a.damage), doff(&a.damage)).cmp(&(
                b.file.clone(),
                dkind(&b.damage),
                doff(&b.damage),
            ))
        });
        // per file per kind
        for f in &files {
            let fs_ = f.to_string_lossy().to_string();
            for kind in ["flip", "truncate", "append"] {
                let rs: Vec<&TrialResult> = results
                    .iter()
                    .filter(|r| r.file == fs_ && dkind(&r.damage) == kind)
                    .collect();
                table.push_str(&format!(
                    "| {} | `{}` | {} | {} |{}| {} |\n",
                    sc.name,
                    fs_,
                    kind,
                    rs.len(),
                    counts(&rs),
                    rs.iter().filter(|r| r.bgpanic).count()
                ));
            }
        }
        for kind in ["flip", "truncate", "append"] {
            let rs: Vec<&TrialResult> =
                results.iter().filter(|r| dkind(&r.damage) == kind).collect();
            summary.push_str(&format!(
                "| {} | {} | {} |{}\n",
                sc.name,
                kind,
                rs.len(),
                counts(&rs)
            ));
        }
        // examples
        examples.push_str(&format!("### {}\n\n", sc.name));
        for oc in [Outcome::Older, Outcome::Other, Outcome::Panic, Outcome::Crash, Outcome::Hang] {
            let rs: Vec<&TrialResult> = results.iter().filter(|r| r.outcome == oc).collect();
            if rs.is_empty() {
                continue;
            }
            examples.push_str(&format!("{:?} ({} total), examples:\n\n", oc, rs.len()));
            // pick up to 8 spread over the list, preferring different files/kinds
            let mut picked: Vec<&TrialResult> = vec![];
            for kind in ["flip", "truncate", "append"] {
                for f in &files {
                    let fs_ = f.to_string_lossy().to_string();
                    let sub: Vec<&&TrialResult> = rs
                        .iter()
                        .filter(|r| r.file == fs_ && dkind(&r.damage) == kind)
                        .collect();
                    if !sub.is_empty() {
                        picked.push(sub[0]);
                        if sub.len() > 2 {
                            picked.push(sub[sub.len() / 2]);
                        }
                        if sub.len() > 1 {
                            picked.push(sub[sub.len() - 1]);
                        }
                    }
                }
            }
            for r in picked.iter().take(12) {
                examples.push_str(&format!(
                    "- `{}` {} -> {}\n",
                    r.file,
                    dstr(&r.damage),
                    r.detail.chars().take(300).collect::<String>()
                ));
            }
            // distinct detail strings histogram for this outcome
            let mut hist: BTreeMap<String, usize> = BTreeMap::new();
            for r in &rs {
                let d: String = r.detail.chars().take(160).collect();
                *hist.entry(format!("{} {}: {}", r.file, dkind(&r.damage), d)).or_default() += 1;
            }
            let mut hv: Vec<_> = hist.into_iter().collect();
            hv.sort_by(|a, b| b.1.cmp(&a.1));
            examples.push_str("\n  most frequent (file, kind: detail) -> count:\n");
            for (k, c) in hv.iter().take(8) {
                examples.push_str(&format!("  - {k} -> {c}\n"));
            }
            examples.push('\n');
        }
        // also summarise REFUSED messages
        let mut hist: BTreeMap<String, usize> = BTreeMap::new();
        for r in results.iter().filter(|r| r.outcome == Outcome::Refused) {
            let d: String = r.detail.chars().take(100).collect();
            *hist.entry(d).or_default() += 1;
        }
        let mut hv: Vec<_> = hist.into_iter().collect();
        hv.sort_by(|a, b| b.1.cmp(&a.1));
        if !hv.is_empty() {
            examples.push_str("REFUSED, most frequent error messages:\n");
            for (k, c) in hv.iter().take(6) {
                examples.push_str(&format!("  - `{k}` -> {c}\n"));
            }
            examples.push('\n');
        }
        let _ = fs::remove_dir_all(tmp_root().join("trial-0"));
        let _ = fs::remove_dir_all(tmp_root().join("trial-1"));
    }
    report.push_str("### Summary per scenario and damage kind (all files)\n\n");
    report.push_str(&summary);
    report.push_str("\n### Per file\n\n");
    report.push_str(&table);
    report.push_str("\n### Examples of non-EXACT, non-REFUSED outcomes\n\n");
    report.push_str(&examples);
}

fn dkind(d: &Damage) -> &'static str {
    match d {
        Damage::Flip(_) => "flip",
        Damage::Truncate(_) => "truncate",
        Damage::Append(_) => "append",
    }
}
fn doff(d: &Damage) -> u64 {
    match d {
        Damage::Flip(o) | Damage::Truncate(o) | Damage::Append(o) => *o,
    }
}
fn dstr(d: &Damage) -> String {
    match d {
        Damage::Flip(o) => format!("flip byte @ {o}"),
        Damage::Truncate(o) => format!("truncate to {o} B"),
        Damage::Append(s) => format!("append 100 B garbage (seed {s:#x})"),
    }
}
fn counts(rs: &[&TrialResult]) -> String {
    OUTCOMES
        .iter()
        .map(|o| format!(" {} ", rs.iter().filter(|r| &r.outcome == o).count()))
        .collect::<Vec<_>>()
        .join("|")
}

// ---------------------------------------------------------------------------------------------
// Throughput
// ---------------------------------------------------------------------------------------------

const BENCH_SECS: f64 = 2.0;

fn bench_raw(dir: &Path, batch: usize, vlen: usize) -> (f64, f64) {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("raw.log");
    let _ = fs::remove_file(&path);
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(0)
        .open(&path)
        .unwrap();
    let buf = vec![0xabu8; vlen * batch];
    let t0 = Instant::now();
    let mut ops = 0u64;
    while t0.elapsed().as_secs_f64() < BENCH_SECS {
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
        ops += 1;
    }
    let el = t0.elapsed().as_secs_f64();
    let _ = fs::remove_file(&path);
    (ops as f64 / el, (ops * batch as u64) as f64 / el)
}

fn bench_redb(dir: &Path, batch: usize, vlen: usize) -> (f64, f64) {
    let path = dir.join("bench.redb");
    let _ = fs::remove_file(&path);
    let db = redb::Database::create(&path).unwrap();
    let v = vec![0xabu8; vlen];
    let mut k = 0u64;
    let t0 = Instant::now();
    let mut txs = 0u64;
    while t0.elapsed().as_secs_f64() < BENCH_SECS {
        let tx = db.begin_write().unwrap(); // default durability: Immediate
        {
            let mut t = tx.open_table(REDB_BENCH).unwrap();
            for _ in 0..batch {
                t.insert(k, v.as_slice()).unwrap();
                k += 1;
            }
        }
        tx.commit().unwrap();
        txs += 1;
    }
    let el = t0.elapsed().as_secs_f64();
    drop(db);
    let _ = fs::remove_file(&path);
    (txs as f64 / el, k as f64 / el)
}

fn bench_fjall(dir: &Path, batch: usize, vlen: usize) -> (f64, f64) {
    let d = dir.join("bench-fjall");
    let _ = fs::remove_dir_all(&d);
    let (txs, k, el) = {
        let ks = fjall::Config::new(&d).open().unwrap();
        let p = ks
            .open_partition("p", fjall::PartitionCreateOptions::default())
            .unwrap();
        let v = vec![0xabu8; vlen];
        let mut k = 0u64;
        let t0 = Instant::now();
        let mut txs = 0u64;
        while t0.elapsed().as_secs_f64() < BENCH_SECS {
            let mut b = ks.batch().durability(Some(fjall::PersistMode::SyncAll));
            for _ in 0..batch {
                b.insert(&p, k.to_be_bytes(), v.as_slice());
                k += 1;
            }
            b.commit().unwrap();
            txs += 1;
        }
        (txs, k, t0.elapsed().as_secs_f64())
    };
    std::thread::sleep(Duration::from_millis(300));
    let _ = fs::remove_dir_all(&d);
    (txs as f64 / el, k as f64 / el)
}

fn bench(report: &mut String, run: usize) {
    let dir = tmp_root().join("bench");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    report.push_str(&format!("### Throughput run {run}\n\n"));
    report.push_str("| what | value size | records per commit (B) | commits/s | records/s | records/s ÷ raw(B=1) records/s |\n|---|---|---|---|---|---|\n");
    let (raw1, _) = bench_raw(&dir, 1, 1024);
    let row = |report: &mut String, what: &str, vlen: usize, b: usize, (c, r): (f64, f64)| {
        let line = format!(
            "| {what} | {vlen} | {b} | {c:.0} | {r:.0} | {:.2} |\n",
            r / raw1
        );
        eprint!("{line}");
        report.push_str(&line);
    };
    row(report, "raw append+fdatasync", 1024, 1, (raw1, raw1));
    for b in [16usize, 64] {
        row(report, "raw append+fdatasync", 1024, b, bench_raw(&dir, b, 1024));
    }
    for b in [1usize, 16, 64] {
        row(report, "redb (Immediate)", 1024, b, bench_redb(&dir, b, 1024));
    }
    for b in [1usize, 16, 64] {
        row(report, "fjall (SyncAll)", 1024, b, bench_fjall(&dir, b, 1024));
    }
    // extra: ~43-byte journal records
    row(report, "raw append+fdatasync", 43, 1, bench_raw(&dir, 1, 43));
    for b in [1usize, 64] {
        row(report, "redb (Immediate)", 43, b, bench_redb(&dir, b, 43));
        row(report, "fjall (SyncAll)", 43, b, bench_fjall(&dir, b, 43));
    }
    report.push('\n');
    let _ = fs::remove_dir_all(&dir);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cmd = args.get(1).map(|s| s.as_str()).unwrap_or("all");
    if cmd == "trial" {
        child_trial(&args[2], &args[3]);
        return;
    }
    fs::create_dir_all(tmp_root()).unwrap();
    let mut report = String::new();
    if cmd == "all" || cmd == "damage" {
        damage_experiments(&mut report);
    }
    if cmd == "all" || cmd == "bench" {
        report.push_str("## Group-commit throughput (/work, ext4)\n\n");
        bench(&mut report, 1);
        if cmd == "all" {
            bench(&mut report, 2);
        }
    }
    let out = tmp_root().join(format!("results-{cmd}.md"));
    fs::write(&out, &report).unwrap();
    println!("{report}");
    eprintln!("written {}", out.display());
}
