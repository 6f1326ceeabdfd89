//! The auth parser's speed on one core (`scripts/bench.sh parse`): a mixed corpus of every
//! family in `tests/fixtures/auth/` (OpenSSH 9.8+ `sshd-session`, 10.0 `sshd-auth`, key-only
//! and password brute force, PAM module tags, sudo/su/login/logind, account tools, every
//! timestamp form), repeated to `LINES` lines, parsed in memory by one `AuthParser` (no I/O, no
//! channel), three runs, the best reported. The forged `message repeated 4294967295 times`
//! line is left out: it expands to a capped 1,000 events and would make the event rate about
//! that one line. Prints
//!   parse: lines_per_s=<n> events_per_s=<m>
//!
//! `cargo run --release -p agent --example bench_parse [LINES]` (default 2,000,000).

use std::time::Instant;

use agent::parse::auth::AuthParser;

fn main() {
    let lines: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let entries: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/auth");
    let mut families = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("tests/fixtures/auth")
        .map(|e| e.expect("a fixture").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    paths.sort();
    for path in &paths {
        let text = std::fs::read_to_string(path).expect("a readable fixture");
        families.extend(text.lines().filter(|l| !l.contains("4294967295")).map(str::to_owned));
    }
    assert!(!families.is_empty(), "no fixture lines in {dir}");
    let corpus: Vec<&str> = families.iter().map(String::as_str).cycle().take(lines).collect();
    println!(
        "corpus: {} lines from {} fixture files ({} distinct lines)",
        corpus.len(),
        paths.len(),
        families.len()
    );
    let mut best = f64::MAX;
    let mut events = 0usize;
    for run in 1..=3 {
        let mut parser = AuthParser::new(2026);
        let mut out = Vec::with_capacity(64);
        let mut produced = 0usize;
        let start = Instant::now();
        for line in &corpus {
            parser.push_line(line, &mut out);
            produced += out.len();
            out.clear();
        }
        parser.finish(&mut out);
        produced += out.len();
        let secs = start.elapsed().as_secs_f64();
        println!("run {run}: {secs:.3} s, {produced} events");
        if secs < best {
            best = secs;
            events = produced;
        }
    }
    println!(
        "parse: lines_per_s={:.0} events_per_s={:.0}",
        corpus.len() as f64 / best,
        events as f64 / best
    );
    journal(&families, entries);
}

/// The files reader's rate over a journal of `entries` entries made from `lines`.
fn journal(lines: &[String], entries: usize) {
    let remote = ["/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("systemd-journal-remote (Debian package systemd-journal-remote) is needed");
    let mut years = agent::parse::syslog::YearTracker::new(2026);
    let parsed: Vec<_> =
        lines.iter().filter_map(|l| agent::parse::syslog::parse(l, &mut years)).collect();
    let mut export = Vec::new();
    for i in 0..entries {
        let us = 1_765_000_000_000_000u64 + i as u64 * 1_000;
        export.extend(
            format!(
                "__REALTIME_TIMESTAMP={us}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=pi-bench\n_TRANSPORT=syslog\n",
                i + 1
            )
            .into_bytes(),
        );
        if i % 3 == 2 {
            export.extend(b"_UID=0\nSYSLOG_IDENTIFIER=CRON\nMESSAGE=pam_unix(cron:session): session closed for user root\n\n");
            continue;
        }
        let l = &parsed[i % parsed.len()];
        let pid = l.pid.map(|p| format!("SYSLOG_PID={p}\n")).unwrap_or_default();
        export.extend(
            format!("_UID=0\nSYSLOG_IDENTIFIER={}\n{pid}MESSAGE={}\n\n", l.program, l.message)
                .into_bytes(),
        );
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let input = dir.path().join("bench.export");
    std::fs::write(&input, &export).expect("write the export");
    let started = Instant::now();
    let out = std::process::Command::new(remote)
        .arg(format!("--output={}", dir.path().join("bench.journal").display()))
        .arg(&input)
        .output()
        .expect("run systemd-journal-remote");
    assert!(
        out.status.success(),
        "systemd-journal-remote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&input).expect("remove the export");
    let size = std::fs::metadata(dir.path().join("bench.journal")).map_or(0, |m| m.len());
    println!(
        "journal: {entries} entries from {} distinct lines, {size} bytes, written in {:.1} s",
        parsed.len(),
        started.elapsed().as_secs_f64()
    );
    let files = best_of(entries, |sink| agent::journal::parse_directory(dir.path(), sink));
    let journalctl = std::path::Path::new("journalctl");
    let piped = best_of(entries, |sink| {
        agent::journal::parse_directory_with_journalctl(journalctl, dir.path(), sink)
    });
    println!(
        "journal (journalctl reader): entries_per_s={:.0} events_per_s={:.0}",
        piped.0, piped.1
    );
    println!("journal: entries_per_s={:.0} events_per_s={:.0}", files.0, files.1);
}

/// Entries and events per second of the best of three runs of `read`.
fn best_of(
    entries: usize,
    mut read: impl FnMut(
        &mut dyn FnMut(wire::Event),
    ) -> Result<agent::journal::DirectorySummary, String>,
) -> (f64, f64) {
    let mut best = (0.0f64, 0.0f64);
    for run in 1..=3 {
        let started = Instant::now();
        let mut produced = 0u64;
        let s = read(&mut |_| produced += 1).expect("read the journal");
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(s.entries as usize, entries, "every entry read");
        println!(
            "run {run}: {secs:.3} s, {} entries ({} parsed, {} skipped, {} unreadable), {produced} events",
            s.entries, s.parsed.lines, s.skipped, s.unreadable
        );
        let rate = entries as f64 / secs;
        if rate > best.0 {
            best = (rate, produced as f64 / secs);
        }
    }
    best
}
