//! The audit trail: one JSON line per hit.
//!
//! A [`Record`] is serialised straight into the [`AuditLog`]'s in-memory buffer under a short
//! lock (no formatter machinery, no intermediate string); a flusher thread swaps the buffer
//! out every [`FLUSH_INTERVAL`] and writes it to `--audit-log` (or stdout) outside that lock,
//! so no request ever waits on the disk (like nginx's `access_log ... buffer=`). The line
//! holds the path without its query string (API keys and signatures travel there) and never
//! a header value other than the identity the profile chose to log.
//!
//! Bounds: a client-chosen field (path, identity, method) longer than [`MAX_FIELD_BYTES`] is
//! cut (at a character boundary) and ends with `…`; lines waiting in memory never exceed the
//! budget given to [`AuditLog::open`] (when the output stalls, new lines are dropped and
//! counted in `portcullis_audit_lines_dropped_total`, never held without bound). SIGHUP
//! reopens `--audit-log` for log rotation ([`AuditLog::reopen`]).
//!
//! ```json
//! {"timestamp":"2026-11-25T20:13:41.123456Z","level":"INFO","message":"hit","route":"orders",
//!  "profile":"partners","identity":"alice","client_ip":"10.0.0.7","method":"GET",
//!  "path":"/orders/1","status":200,"latency_ms":0.412,"decision":"allow","reason":"-",
//!  "target":"portcullis::audit"}
//! ```

use std::cell::Cell;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;

/// The `target` field of every audit line.
pub const TARGET: &str = "portcullis::audit";

/// How long an audit line may wait in memory before it is written out.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Longest value of a field the client chooses (path, identity, method) written in full.
pub const MAX_FIELD_BYTES: usize = 1024;

/// What is logged about one request.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// Route that matched, `-` when none did.
    pub route: &'a str,
    /// Profile that admitted (or last refused) the call, `-` when none.
    pub profile: &'a str,
    /// Identity admitted, `-` when none (a profile's `identityHeader` value when it has one).
    pub identity: &'a str,
    /// Who authenticated, when `identity` is the client-chosen `identityHeader` value and
    /// differs from it: the line then names both, so the header cannot hide the caller.
    pub authenticated: Option<&'a str>,
    /// The client address (after trusted proxies).
    pub client_ip: IpAddr,
    pub method: &'a str,
    /// Path only: the query string is never logged.
    pub path: &'a str,
    pub status: u16,
    pub latency: Duration,
    /// `allow`, `deny`, `no_route`, `redirect`, `error` or `abandoned` (the client left while
    /// the sidecar waited on its behalf).
    pub decision: &'a str,
    /// Why the call was refused or failed, `-` when it was not.
    pub reason: &'a str,
}

impl Record<'_> {
    /// Appends this record as one JSON line, stamped `now`, to `out`.
    pub fn write_json(&self, now: SystemTime, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(now, out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"hit\"");
        string_field(out, "route", self.route);
        string_field(out, "profile", self.profile);
        string_field(out, "identity", self.identity);
        if let Some(authenticated) = self.authenticated {
            string_field(out, "authenticated", authenticated);
        }
        out.extend_from_slice(b",\"client_ip\":\"");
        // An address is ASCII digits, dots, colons and hex: nothing to escape.
        crate::base::headers::push_ip(out, self.client_ip);
        out.push(b'"');
        string_field(out, "method", self.method);
        string_field(out, "path", self.path);
        out.extend_from_slice(b",\"status\":");
        decimal(out, u64::from(self.status));
        // Milliseconds with microsecond precision, from integers (no float formatting).
        let micros = self.latency.as_micros().min(u128::from(u64::MAX)) as u64;
        out.extend_from_slice(b",\"latency_ms\":");
        decimal(out, micros / 1000);
        out.push(b'.');
        padded(out, micros % 1000, 3);
        string_field(out, "decision", self.decision);
        string_field(out, "reason", self.reason);
        out.extend_from_slice(b",\"target\":\"");
        out.extend_from_slice(TARGET.as_bytes());
        out.extend_from_slice(b"\"}\n");
    }
}

/// `,"key":"value"` with `value` escaped as a JSON string, cut to [`MAX_FIELD_BYTES`].
fn string_field(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":\"");
    if value.len() > MAX_FIELD_BYTES {
        let mut end = MAX_FIELD_BYTES;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        escaped(out, &value[..end]);
        out.extend_from_slice("…".as_bytes());
    } else {
        escaped(out, value);
    }
    out.push(b'"');
}

/// `value` as the inside of a JSON string: `"`, `\` and control characters escaped, the
/// rest (valid UTF-8) copied as is.
fn escaped(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `n` in decimal.
fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `n` in decimal, zero-padded to `width` digits.
fn padded(out: &mut Vec<u8>, n: u64, width: u32) {
    let mut p = 10u64.pow(width - 1);
    while p > 0 {
        out.push(b'0' + ((n / p) % 10) as u8);
        p /= 10;
    }
}

/// `now` in RFC 3339, UTC, with microseconds: `2026-11-25T20:13:41.123456Z`. The date and
/// time of day are worked out once per second (per thread), not for every line.
fn timestamp(now: SystemTime, out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let text = match SECOND.get() {
        (cached, text) if cached == secs => text,
        _ => {
            let text = calendar_second(secs);
            SECOND.set((secs, text));
            text
        }
    };
    out.extend_from_slice(&text);
    out.push(b'.');
    padded(out, u64::from(since.subsec_micros()), 6);
    out.push(b'Z');
}

/// `secs` since the Unix epoch as `2026-11-25T20:13:41`.
fn calendar_second(secs: u64) -> [u8; 19] {
    let (year, month, day) = portcullis_policy::limit::civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    let mut text = *b"0000-00-00T00:00:00";
    let fields = [
        (0..4, year.clamp(0, 9999) as u64),
        (5..7, u64::from(month)),
        (8..10, u64::from(day)),
        (11..13, of_day / 3600),
        (14..16, of_day / 60 % 60),
        (17..19, of_day % 60),
    ];
    for (at, mut n) in fields {
        for digit in text[at].iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    text
}

/// Where the audit lines go, buffered (see the module documentation).
pub struct AuditLog {
    /// Lines not yet written; request handlers append here.
    pending: Mutex<Vec<u8>>,
    /// The destination, and the spare buffer swapped with `pending` on each flush.
    out: Mutex<(Box<dyn Write + Send>, Vec<u8>)>,
    /// The file written to, reopened by [`reopen`](Self::reopen); `None`: stdout.
    path: Option<PathBuf>,
    /// Most bytes `pending` may hold; a line that would go beyond is dropped.
    budget: usize,
    /// Lines dropped for want of room.
    dropped: IntCounter,
}

impl AuditLog {
    /// Appends to the file at `path` (created if missing), or writes to stdout; at most
    /// `budget` bytes of lines wait in memory.
    pub fn open(path: Option<&Path>, budget: usize) -> io::Result<Arc<Self>> {
        let out: Box<dyn Write + Send> = match path {
            Some(path) => Box::new(append(path)?),
            None => Box::new(io::stdout()),
        };
        Ok(Self::build(out, path.map(Path::to_owned), budget))
    }

    /// Writes to `out` (a 16 MiB budget).
    pub fn to(out: Box<dyn Write + Send>) -> Arc<Self> {
        Self::build(out, None, 16 << 20)
    }

    fn build(out: Box<dyn Write + Send>, path: Option<PathBuf>, budget: usize) -> Arc<Self> {
        let dropped = IntCounter::new(
            "portcullis_audit_lines_dropped_total",
            "Audit lines dropped because the output could not keep up (the in-memory budget was full)",
        )
        .expect("a valid metric");
        Arc::new(Self {
            pending: Mutex::new(Vec::with_capacity(64 * 1024)),
            out: Mutex::new((out, Vec::with_capacity(64 * 1024))),
            path,
            budget,
            dropped,
        })
    }

    /// The counter of dropped lines, to register with the metrics.
    pub fn dropped(&self) -> IntCounter {
        self.dropped.clone()
    }

    /// Opens `--audit-log` again (after log rotation moved it away); on failure the old file
    /// is kept and the error returned. Nothing is lost: pending lines go to the new file.
    pub fn reopen(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = append(path)?;
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.0.flush();
        out.0 = Box::new(file);
        Ok(())
    }

    /// Appends one line (written out by the next [`flush`](Self::flush)).
    pub fn record(&self, record: &Record<'_>) {
        let mut pending = self.pending();
        let before = pending.len();
        if before >= self.budget {
            drop(pending);
            self.dropped.inc();
            return;
        }
        record.write_json(SystemTime::now(), &mut pending);
        if pending.len() > self.budget {
            pending.truncate(before);
            drop(pending);
            self.dropped.inc();
        }
    }

    fn pending(&self) -> MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes out every line recorded so far.
    pub fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let (out, spare) = &mut *out;
        std::mem::swap(&mut *self.pending(), spare);
        if spare.is_empty() {
            return;
        }
        if let Err(error) = out.write_all(spare).and_then(|()| out.flush()) {
            tracing::error!(%error, "cannot write the audit log");
        }
        spare.clear();
    }

    /// Starts the thread that flushes every [`FLUSH_INTERVAL`] for the life of the process.
    pub fn spawn_flusher(self: &Arc<Self>) -> io::Result<()> {
        let log = Arc::clone(self);
        std::thread::Builder::new()
            .name("audit-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    log.flush();
                }
            })
            .map(drop)
    }
}

fn append(path: &Path) -> io::Result<std::fs::File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(path: &'a str, identity: &'a str) -> Record<'a> {
        Record {
            route: "orders",
            profile: "partners",
            identity,
            authenticated: None,
            client_ip: "10.0.0.7".parse().unwrap(),
            method: "GET",
            path,
            status: 200,
            latency: Duration::from_micros(1_412),
            decision: "allow",
            reason: "-",
        }
    }

    fn line(r: &Record<'_>, now: SystemTime) -> serde_json::Value {
        let mut out = Vec::new();
        r.write_json(now, &mut out);
        assert_eq!(out.last(), Some(&b'\n'), "one line");
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn a_record_is_one_json_object_with_every_field() {
        let now = UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
        let v = line(&record("/orders/1", "alice"), now);
        assert_eq!(v["timestamp"], "2026-11-18T11:06:40.123456Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "hit");
        assert_eq!(v["target"], TARGET);
        assert_eq!(v["route"], "orders");
        assert_eq!(v["profile"], "partners");
        assert_eq!(v["identity"], "alice");
        assert_eq!(v["client_ip"], "10.0.0.7");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/orders/1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_ms"], 1.412);
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["reason"], "-");
    }

    #[test]
    fn strings_are_escaped() {
        let nasty = "a\"b\\c\nd\re\tf\u{1}g\u{7f}h é ☃";
        let v = line(&record(nasty, nasty), SystemTime::now());
        assert_eq!(v["path"], nasty);
        assert_eq!(v["identity"], nasty);
        // Each character that must be escaped, alone in an otherwise plain value.
        for one in ["\"", "\\", "\u{0}", "\u{1f}", "\u{7f}", "\n"] {
            let value = format!("/plain{one}plain");
            let mut out = Vec::new();
            escaped(&mut out, &value);
            assert_ne!(out, value.as_bytes(), "{value:?} copied unescaped");
            let v = line(&record(&value, "-"), SystemTime::now());
            assert_eq!(v["path"], value.as_str());
        }
    }

    #[test]
    fn latency_keeps_microseconds() {
        for (micros, ms) in [(0, 0.0), (7, 0.007), (999, 0.999), (1_000, 1.0), (2_500_042, 2500.042)] {
            let mut r = record("/", "-");
            r.latency = Duration::from_micros(micros);
            assert_eq!(line(&r, SystemTime::now())["latency_ms"], ms, "{micros} µs");
        }
    }

    #[test]
    fn timestamps_match_the_calendar() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, "2000-02-29T00:00:00.000000Z"),
            (4_107_542_399, "2100-02-28T23:59:59.000000Z"),
            (1_798_761_599, "2026-12-31T23:59:59.000000Z"),
        ] {
            let mut out = Vec::new();
            timestamp(UNIX_EPOCH + Duration::from_secs(secs), &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
        // The same second again (its date remembered), the next one, and back.
        for (secs, micros, want) in [
            (1_798_761_599, 7, "2026-12-31T23:59:59.000007Z"),
            (1_798_761_599, 999_999, "2026-12-31T23:59:59.999999Z"),
            (1_798_761_600, 1, "2027-01-01T00:00:00.000001Z"),
            (1_798_761_599, 2, "2026-12-31T23:59:59.000002Z"),
        ] {
            let mut out = Vec::new();
            timestamp(
                UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros),
                &mut out,
            );
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn ipv6_clients_are_quoted() {
        let mut r = record("/", "-");
        r.client_ip = "2001:db8::1".parse().unwrap();
        assert_eq!(line(&r, SystemTime::now())["client_ip"], "2001:db8::1");
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_reach_the_destination_only_when_flushed() {
        let sink = Shared::default();
        let log = AuditLog::to(Box::new(sink.clone()));
        log.record(&record("/a", "-"));
        log.record(&record("/b", "-"));
        assert!(sink.0.lock().unwrap().is_empty(), "buffered");
        log.flush();
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let paths: Vec<String> = written
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].to_string())
            .collect();
        assert_eq!(paths, ["\"/a\"", "\"/b\""]);
        log.flush();
        assert_eq!(sink.0.lock().unwrap().len(), written.len(), "nothing written twice");
    }

    #[test]
    fn long_client_fields_are_cut_at_a_character_boundary() {
        let path = format!("/{}", "é".repeat(40_000));
        let v = line(&record(&path, "-"), SystemTime::now());
        let logged = v["path"].as_str().unwrap();
        assert!(logged.len() <= MAX_FIELD_BYTES + "…".len(), "{}", logged.len());
        assert!(logged.ends_with('…'));
        assert!(path.starts_with(logged.trim_end_matches('…')));
        assert_eq!(line(&record("/short", "-"), SystemTime::now())["path"], "/short");
    }

    /// A writer that never accepts a byte, as a full pipe or a hung disk.
    struct Stalled;

    impl Write for Stalled {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_beyond_the_budget_are_dropped_and_counted() {
        let log = AuditLog::build(Box::new(Stalled), None, 4096);
        for _ in 0..1000 {
            log.record(&record("/orders/1", "alice"));
        }
        let held = log.pending().len();
        assert!(held <= 4096, "{held}");
        assert!(held > 3000, "the budget is used: {held}");
        let kept = held / line_len();
        assert_eq!(log.dropped().get(), 1000 - kept as u64);
        // Room again once the output takes the lines.
        std::mem::take(&mut *log.pending());
        log.record(&record("/orders/1", "alice"));
        assert_eq!(log.pending().len(), line_len());
    }

    fn line_len() -> usize {
        let mut out = Vec::new();
        record("/orders/1", "alice").write_json(SystemTime::now(), &mut out);
        out.len()
    }

    #[test]
    fn reopen_follows_a_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(Some(&path), 1 << 20).unwrap();
        log.record(&record("/before", "-"));
        log.flush();
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        log.record(&record("/after", "-"));
        log.reopen().unwrap();
        log.flush();
        let rotated = std::fs::read_to_string(dir.path().join("audit.log.1")).unwrap();
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(rotated.contains("/before") && !rotated.contains("/after"), "{rotated}");
        assert!(current.contains("/after") && !current.contains("/before"), "{current}");
    }
}
