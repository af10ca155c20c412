//! Metrics for `voq serve` and `voq lb`, in one convention:
//!
//! - names are `voq_<what>` for the server and `voq_lb_<what>` for the balancer; counters end in
//!   `_total` (Prometheus naming), gauges do not;
//! - a quantity split by a kind is **one family with a label**, never one name per kind
//!   (`voq_sessions_started_total{carrier="quic"}`, not `voq_sessions_quic`), and the label
//!   values come from the type that names the kinds ([`LabelValue`]), so a new variant cannot be
//!   forgotten by a string table;
//! - the text is the Prometheus exposition format 0.0.4, written by [`Exposition`] and served at
//!   `GET /metrics` by [`serve`].
#![warn(missing_docs)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A monotonically increasing count: a relaxed atomic, cheap enough for every packet.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A closed set of kinds that label one metric family: every variant, and its label value.
///
/// Implemented by the enums whose variants are counted (carriers, drop reasons, …), so the
/// exposition lists every variant — also those still at zero, which Prometheus needs to tell
/// "none yet" from "not exported".
pub trait LabelValue: Copy + PartialEq + 'static {
    /// Every variant, in exposition order.
    const ALL: &'static [Self];
    /// The label value: lower-case snake case, stable across releases.
    fn label_value(self) -> &'static str;
}

/// Counters indexed by the variants of a [`LabelValue`] type: one family, one counter a label.
#[derive(Debug)]
pub struct LabelledCounter<L: LabelValue> {
    /// One counter for each entry of `L::ALL`, in that order.
    counts: Box<[Counter]>,
    _label: std::marker::PhantomData<L>,
}

impl<L: LabelValue> Default for LabelledCounter<L> {
    fn default() -> Self {
        Self {
            counts: L::ALL.iter().map(|_| Counter::default()).collect(),
            _label: std::marker::PhantomData,
        }
    }
}

impl<L: LabelValue> LabelledCounter<L> {
    /// The counter of one variant.
    pub fn get(&self, label: L) -> &Counter {
        let index = L::ALL.iter().position(|l| *l == label);
        // Every value of `L` is in `L::ALL` (the trait's contract); a type that breaks it has
        // its strays counted under the first variant rather than lost.
        &self.counts[index.unwrap_or(0)]
    }

    /// The sum over all variants.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(Counter::get).sum()
    }

    /// `(variant, count)` for every variant, in [`LabelValue::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (L, u64)> + '_ {
        L::ALL
            .iter()
            .copied()
            .zip(self.counts.iter().map(Counter::get))
    }
}

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (restarts at zero with the process); the name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A Prometheus text exposition being written, one family at a time.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: writes its `# HELP` and `# TYPE` lines; add samples to the result.
    ///
    /// # Panics
    ///
    /// In debug builds, when a counter's name does not end in `_total` or a gauge's does: the
    /// convention of this crate, checked where every name passes.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> Family<'_> {
        debug_assert_eq!(
            name.ends_with("_total"),
            kind == Kind::Counter,
            "metric {name}: counters, and only counters, end in _total"
        );
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        Family {
            out: &mut self.out,
            name: name.to_string(),
        }
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help).sample(&[], value);
    }

    /// A counter family with one sample for every variant of `L`, labelled `label`.
    pub fn by<L: LabelValue>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (L, u64)>,
    ) {
        let mut family = self.family(name, Kind::Counter, help);
        for (variant, value) in samples {
            family.sample(&[(label, variant.label_value())], value);
        }
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// One family of an [`Exposition`]: its samples.
#[derive(Debug)]
pub struct Family<'a> {
    out: &'a mut String,
    name: String,
}

impl Family<'_> {
    /// Adds a sample with these labels (none for an unlabelled family). Label values are
    /// escaped as the format requires.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: u64) -> &mut Self {
        self.out.push_str(&self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Serves `render()` at `http://addr/metrics` until the returned task is aborted; returns the
/// bound address. One request per connection, a bounded read with a 5 s timeout, 404 for any
/// other path.
pub async fn serve(
    addr: SocketAddr,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let render = render.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
                else {
                    return;
                };
                let response = if buf[..n].starts_with(b"GET /metrics ") {
                    let body = render();
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Colour {
        Red,
        Blue,
    }

    impl LabelValue for Colour {
        const ALL: &'static [Self] = &[Colour::Red, Colour::Blue];
        fn label_value(self) -> &'static str {
            match self {
                Colour::Red => "red",
                Colour::Blue => "blue",
            }
        }
    }

    #[test]
    fn a_labelled_family_lists_every_variant_even_at_zero() {
        let counts = LabelledCounter::<Colour>::default();
        counts.get(Colour::Blue).add(2);
        assert_eq!(counts.total(), 2);
        let mut text = Exposition::new();
        text.by("voq_things_total", "Things.", "colour", counts.iter());
        assert_eq!(
            text.finish(),
            "# HELP voq_things_total Things.\n# TYPE voq_things_total counter\n\
             voq_things_total{colour=\"red\"} 0\nvoq_things_total{colour=\"blue\"} 2\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut text = Exposition::new();
        text.family("voq_up", Kind::Gauge, "line\none")
            .sample(&[("a", "x\"y\\z\n")], 1);
        assert_eq!(
            text.finish(),
            "# HELP voq_up line\\none\n# TYPE voq_up gauge\nvoq_up{a=\"x\\\"y\\\\z\\n\"} 1\n"
        );
    }

    #[test]
    #[should_panic(expected = "end in _total")]
    #[cfg(debug_assertions)]
    fn a_counter_without_total_is_refused() {
        Exposition::new().single("voq_things", Kind::Counter, "Things.", 1);
    }

    async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn metrics_are_served_and_other_paths_are_404() -> std::io::Result<()> {
        let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(|| "x_total 3\n".to_string());
        let (addr, task) = serve(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            render,
        )
        .await?;
        let ok = get(addr, "/metrics").await?;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("\r\n\r\nx_total 3\n"),
            "{ok}"
        );
        assert!(get(addr, "/other").await?.starts_with("HTTP/1.1 404"));
        task.abort();
        Ok(())
    }
}
