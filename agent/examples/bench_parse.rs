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
}
