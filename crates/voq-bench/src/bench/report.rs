//! From runs to figures: per-scenario metrics (p50 / p99 / max over repeats), target checks,
//! the terminal table, the JSON document and the HTML report with inline SVG bar charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::run::RunResult;
use super::scenario::{Dir, Figure, Network, Phase, Scenario, TargetSpec, fmt_num};

/// The JSON document: `{"scenarios": [{"name", "carrier", "network", "metrics", …}], …}`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub scenarios: Vec<ScenarioResult>,
    pub figures: Vec<FigureInfo>,
    pub meta: Meta,
}

/// Where and how the numbers were made.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub command: String,
    /// UTC, `YYYY-MM-DD HH:MM:SS`.
    pub date: String,
    pub quick: bool,
    pub cores: usize,
    pub cpu: String,
    pub duration_s: f64,
    /// `/proc/loadavg` (1, 5, 15 min) when the run started and when it ended: the machine is
    /// shared, and load shows in every timing.
    pub load_start: String,
    pub load_end: String,
    pub voq_version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FigureInfo {
    pub id: String,
    pub title: String,
    pub description: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub figure: String,
    pub label: String,
    pub description: String,
    pub carrier: String,
    pub network: Network,
    pub agent: String,
    pub call: super::scenario::CallPattern,
    pub repeats: u32,
    /// One number per metric (see [`metric_value`] for which statistic).
    pub metrics: BTreeMap<String, f64>,
    /// Every per-run metric over the repeats.
    pub distributions: BTreeMap<String, Dist>,
    pub targets: Vec<TargetResult>,
    pub errors: Vec<String>,
    pub runs: Vec<RunResult>,
}

/// A metric over the repeats. Percentiles interpolate linearly between ranks (with 10 runs, p99
/// is 0.91 of the way from the 9th value to the largest).
#[derive(Debug, Clone, Serialize)]
pub struct Dist {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    pub values: Vec<f64>,
}

impl Dist {
    fn new(mut values: Vec<f64>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let raw = values.clone();
        values.sort_by(f64::total_cmp);
        Some(Self {
            n: values.len(),
            min: values[0],
            p50: percentile(&values, 0.50),
            p99: percentile(&values, 0.99),
            max: values[values.len() - 1],
            mean: values.iter().sum::<f64>() / values.len() as f64,
            values: raw,
        })
    }
}

/// The `q` quantile (0..=1) of sorted values, linearly interpolated between the two nearest
/// ranks (Hyndman and Fan's type 7, numpy's and R's default). The one definition behind every
/// table voq publishes; NaN for no values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// A claim checked against the runs.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub metric: String,
    pub stat: String,
    /// `<=`, `>=` or `==`.
    pub op: String,
    pub threshold: f64,
    /// The statistic's value; `None` when the metric was not measured.
    pub value: Option<f64>,
    pub met: bool,
    /// Runs meeting the target on their own (for per-run metrics).
    pub runs_met: Option<usize>,
    pub runs: usize,
    pub claim: String,
}

/// Per-run metrics summed into a ratio rather than a median: `(numerator, denominator)`.
const RATIOS: &[(&str, &str, &str)] = &[
    (
        "prompt_delivered_fraction",
        "prompt_frames_confirmed",
        "prompt_frames_sent",
    ),
    (
        "reference_delivered_fraction",
        "reference_on_time",
        "reference_sent",
    ),
    (
        "reference_late_fraction",
        "reference_late",
        "reference_sent",
    ),
];

/// Per-run metrics reported as their mean (a fraction of runs).
const MEANS: &[&str] = &["prompt_bit_exact", "zero_rtt_used"];

/// Which statistic the scalar metric is: a ratio of sums, a mean, or the median (p50).
pub fn metric_value(name: &str) -> &'static str {
    if RATIOS.iter().any(|(n, _, _)| *n == name) {
        "ratio of sums over runs"
    } else if MEANS.contains(&name) {
        "mean over runs"
    } else {
        "p50 over runs"
    }
}

/// Seeds of the physical-limit model per scenario (its p99 is then stable to a frame).
const LIMIT_RUNS: usize = 2000;

/// The physical limit of the scenario's prompt (`voq_netem::limit`: every lost transmission
/// repaired exactly one RTT after it left, over the client → server link's loss process), as
/// (p50, p99) extra delay in ms for a turn of `frames` 20 ms frames. Blackouts tied to the
/// `turn` phase start that long after the turn's first frame (the model has no handshake).
fn physical_limit(s: &Scenario, frames: usize) -> Option<(f64, f64)> {
    use std::time::{Duration, Instant};
    let mut up = s.network.up.clone();
    up.blackouts.extend(
        s.network
            .blackouts
            .iter()
            .filter(|b| b.phase == Phase::Turn && b.direction != Dir::Down)
            .map(|b| voq_netem::Blackout {
                start_ms: b.at_ms,
                duration_ms: b.duration_ms,
            }),
    );
    let rtt = Duration::from_secs_f64(s.network.rtt_ms() / 1000.0);
    let all = voq_netem::limit::turn_extra_delays(
        Instant::now(),
        &up,
        rtt,
        frames,
        Duration::from_millis(20),
        1,
        LIMIT_RUNS,
    )
    .ok()?;
    let ms = |q: f64| all[((all.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    Some((ms(0.5), ms(0.99)))
}

/// Aggregates one scenario's runs. `baseline_hold_ms` is the p50 turn-hold time of its loss-free
/// baseline.
pub fn aggregate(
    figure: &Figure,
    s: &Scenario,
    runs: Vec<RunResult>,
    baseline_hold_ms: Option<f64>,
) -> ScenarioResult {
    let mut per_metric: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &runs {
        for (k, v) in &r.metrics {
            per_metric.entry(k.clone()).or_default().push(*v);
        }
    }
    if let Some(base) = baseline_hold_ms
        && let Some(holds) = per_metric.get("prompt_hold_ms").cloned()
    {
        per_metric.insert(
            "prompt_extra_delay_ms".into(),
            holds.iter().map(|h| h - base).collect(),
        );
    }
    let distributions: BTreeMap<String, Dist> = per_metric
        .into_iter()
        .filter_map(|(k, v)| Dist::new(v).map(|d| (k, d)))
        .collect();
    let mut metrics = BTreeMap::new();
    for (k, d) in &distributions {
        let v = if MEANS.contains(&k.as_str()) {
            d.mean
        } else {
            d.p50
        };
        metrics.insert(k.clone(), v);
    }
    for (name, num, den) in RATIOS {
        let sum = |k: &str| {
            runs.iter()
                .map(|r| r.metrics.get(k).copied())
                .sum::<Option<f64>>()
        };
        if let (Some(n), Some(d)) = (sum(num), sum(den))
            && d > 0.0
        {
            metrics.insert((*name).to_string(), n / d);
        } else if runs.iter().any(|r| r.metrics.contains_key(*name)) {
            // A failed run has the fraction (0) but not the counts.
            let d = &distributions[*name];
            metrics.insert((*name).to_string(), d.mean);
        }
    }
    for name in ["setup_rtts", "first_prompt_byte_rtts"] {
        if let Some(d) = distributions.get(name) {
            metrics.insert(format!("{name}_p99"), d.p99);
        }
    }
    if let Some(d) = distributions.get("prompt_extra_delay_ms") {
        metrics.insert("prompt_extra_delay_p50_ms".into(), d.p50);
        metrics.insert("prompt_extra_delay_p99_ms".into(), d.p99);
        metrics.remove("prompt_extra_delay_ms");
        let frames = distributions
            .get("prompt_frames_sent")
            .map(|f| f.p50 as usize);
        if let Some((limit_p50, limit_p99)) = frames.and_then(|n| physical_limit(s, n)) {
            metrics.insert("prompt_limit_p50_ms".into(), limit_p50);
            metrics.insert("prompt_limit_p99_ms".into(), limit_p99);
            // A ratio to a limit of 0 (no loss, or a blackout the turn outlasts) says nothing.
            if limit_p99 >= 1.0 {
                metrics.insert(
                    "prompt_extra_delay_p99_ratio".into(),
                    d.p99.max(0.0) / limit_p99,
                );
            }
        }
    }
    let targets = s
        .targets
        .iter()
        .map(|t| check(t, &metrics, &distributions, runs.len()))
        .collect();
    let errors = runs
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("run {}: {e}", r.repeat)))
        .collect();
    ScenarioResult {
        name: s.name.clone(),
        figure: figure.id.clone(),
        label: s.label.clone(),
        description: s.description.clone(),
        carrier: s.carrier.name().into(),
        network: s.network.clone(),
        agent: match s.agent.spec.as_str() {
            "echo" => "echo".into(),
            spec => format!(
                "{spec} at {}x{}",
                fmt_num(s.agent.speed),
                s.agent
                    .max_ms
                    .map_or(String::new(), |m| format!(", first {m} ms"))
            ),
        },
        call: s.call.clone(),
        repeats: s.repeats,
        metrics,
        distributions,
        targets,
        errors,
        runs,
    }
}

fn check(
    t: &TargetSpec,
    metrics: &BTreeMap<String, f64>,
    dists: &BTreeMap<String, Dist>,
    runs: usize,
) -> TargetResult {
    let (op, threshold) = match (t.le, t.ge, t.eq) {
        (Some(x), _, _) => ("<=", x),
        (_, Some(x), _) => (">=", x),
        (_, _, Some(x)) => ("==", x),
        _ => ("==", f64::NAN),
    };
    let holds = |v: f64| match op {
        "<=" => v <= threshold,
        ">=" => v >= threshold,
        _ => (v - threshold).abs() < 1e-9,
    };
    let stat = t.stat.clone().unwrap_or_else(|| {
        match (op, dists.contains_key(&t.metric)) {
            (_, false) => "value",
            (">=", true) => "min",
            (_, true) => "max",
        }
        .to_string()
    });
    let d = dists.get(&t.metric);
    let value = match stat.as_str() {
        "value" => metrics.get(&t.metric).copied(),
        "min" => d.map(|d| d.min),
        "max" => d.map(|d| d.max),
        "p50" => d.map(|d| d.p50),
        "p99" => d.map(|d| d.p99),
        "mean" => d.map(|d| d.mean),
        _ => None,
    };
    // A run that did not produce the metric (a failed call) fails a per-run target.
    let complete = d.is_none_or(|d| d.n == runs);
    let met = complete
        && match (op, stat.as_str(), d) {
            // `==` on a distribution: every run.
            ("==", "max" | "min", Some(d)) => d.values.iter().all(|v| holds(*v)),
            _ => value.is_some_and(holds),
        };
    let runs_met = d.map(|d| d.values.iter().filter(|v| holds(**v)).count());
    TargetResult {
        metric: t.metric.clone(),
        stat,
        op: op.into(),
        threshold,
        value,
        met,
        runs_met,
        runs,
        claim: t.claim.clone(),
    }
}

/// A metric formatted for a table: fractions with 4 decimals (never rounded up to 1), RTT
/// multiples with 2, bytes and counts whole, ms with 1 below 100.
pub fn fmt_metric(name: &str, v: f64) -> String {
    if v.is_nan() {
        return "-".into();
    }
    if name.ends_with("fraction") || MEANS.contains(&name) {
        if v == 1.0 {
            return "1".into();
        }
        let s = format!("{v:.4}");
        return if s == "1.0000" { "0.9999+".into() } else { s };
    }
    if name.ends_with("_rtts") {
        return format!("{v:.2}");
    }
    if name.ends_with("bytes") || name.ends_with("underruns") {
        return format!("{v:.0}");
    }
    if v.abs() < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// A table cell: the metric, and its range over the runs when there were several and they
/// differ (`p50 [min–max]`).
fn cell(s: &ScenarioResult, metric: &str) -> Option<String> {
    let v = *s.metrics.get(metric)?;
    let main = fmt_metric(metric, v);
    match s.distributions.get(metric) {
        Some(d) if d.n > 1 && d.min != d.max && !RATIOS.iter().any(|(n, _, _)| *n == metric) => {
            Some(format!(
                "{main} [{}–{}]",
                fmt_metric(metric, d.min),
                fmt_metric(metric, d.max)
            ))
        }
        _ => Some(main),
    }
}

/// Rows of a figure: one per label, metrics from the scenarios sharing it.
fn rows<'a>(
    figure: &FigureInfo,
    results: &'a [ScenarioResult],
) -> Vec<(String, Vec<&'a ScenarioResult>)> {
    let mut rows: Vec<(String, Vec<&ScenarioResult>)> = Vec::new();
    for s in results.iter().filter(|s| s.figure == figure.id) {
        match rows.iter_mut().find(|(l, _)| *l == s.label) {
            Some((_, v)) => v.push(s),
            None => rows.push((s.label.clone(), vec![s])),
        }
    }
    rows
}

fn row_cell(scenarios: &[&ScenarioResult], metric: &str) -> String {
    scenarios
        .iter()
        .find_map(|s| cell(s, metric))
        .unwrap_or_else(|| "-".into())
}

/// The terminal summary: one table per figure, then the targets.
pub fn table(report: &BenchReport) -> String {
    let mut out = String::new();
    for f in &report.figures {
        let rows = rows(f, &report.scenarios);
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n== {}", f.title);
        let mut header = vec!["".to_string()];
        header.extend(f.columns.iter().cloned());
        header.push("runs".into());
        header.push("network".into());
        let mut lines: Vec<Vec<String>> = vec![header];
        for (label, ss) in &rows {
            let mut line = vec![label.clone()];
            for c in &f.columns {
                line.push(row_cell(ss, c));
            }
            line.push(
                ss.iter()
                    .map(|s| s.repeats.to_string())
                    .collect::<Vec<_>>()
                    .join("+"),
            );
            line.push(
                ss.first()
                    .map_or(String::new(), |s| s.network.description.clone()),
            );
            lines.push(line);
        }
        let ncols = lines[0].len();
        let widths: Vec<usize> = (0..ncols)
            .map(|i| {
                lines
                    .iter()
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for l in &lines {
            let mut s = String::new();
            for (i, c) in l.iter().enumerate() {
                if i + 1 == ncols {
                    s.push_str(c);
                } else if i == 0 {
                    let _ = write!(s, "{c:<w$}  ", w = widths[i]);
                } else {
                    let _ = write!(s, "{c:>w$}  ", w = widths[i]);
                }
            }
            let _ = writeln!(out, "{}", s.trim_end());
        }
        for s in report.scenarios.iter().filter(|s| s.figure == f.id) {
            for t in &s.targets {
                let _ = writeln!(out, "  {}", target_line(s, t));
            }
            for e in &s.errors {
                let _ = writeln!(out, "  ERROR {}: {e}", s.name);
            }
        }
    }
    let (met, all) = report
        .scenarios
        .iter()
        .flat_map(|s| &s.targets)
        .fold((0, 0), |(m, a), t| (m + usize::from(t.met), a + 1));
    let _ = writeln!(
        out,
        "\ntargets met: {met} of {all}. Cells: p50 [min–max] over the runs; fractions are ratios of sums."
    );
    out
}

fn target_line(s: &ScenarioResult, t: &TargetResult) -> String {
    format!(
        "{} {}: {} {} = {} {} {}{}{}",
        if t.met { "met   " } else { "MISSED" },
        s.name,
        t.metric,
        t.stat,
        t.value
            .map_or("not measured".into(), |v| fmt_metric(&t.metric, v)),
        t.op,
        fmt_num(t.threshold),
        t.runs_met
            .map_or(String::new(), |n| format!(" ({n}/{} runs)", t.runs)),
        if t.claim.is_empty() {
            String::new()
        } else {
            format!(" — {}", t.claim)
        }
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLORS: &[&str] = &[
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
];

/// A bar's value and its whisker (smallest, largest run).
type Bar = (f64, Option<(f64, f64)>);

/// A grouped bar chart as inline SVG: one group per label, one bar per metric, a whisker from
/// the smallest to the largest run.
pub fn bar_chart(
    title: &str,
    unit: &str,
    metrics: &[String],
    groups: &[(String, Vec<&ScenarioResult>)],
) -> String {
    let (w, h) = (760.0_f64, 300.0_f64);
    let (left, right, top, bottom) = (64.0, 16.0, 36.0, 64.0);
    let values: Vec<Vec<Option<Bar>>> = groups
        .iter()
        .map(|(_, ss)| {
            metrics
                .iter()
                .map(|m| {
                    ss.iter().find_map(|s| {
                        let v = *s.metrics.get(m)?;
                        let range = s
                            .distributions
                            .get(m)
                            .filter(|d| d.n > 1 && !RATIOS.iter().any(|(n, _, _)| n == m))
                            .map(|d| (d.min, d.max));
                        Some((v, range))
                    })
                })
                .collect()
        })
        .collect();
    let top_value = values
        .iter()
        .flatten()
        .flatten()
        .map(|(v, r)| r.map_or(*v, |(_, hi)| hi.max(*v)))
        .fold(0.0_f64, f64::max);
    let (scale_max, step) = nice_axis(top_value);
    let plot_h = h - top - bottom;
    let plot_w = w - left - right;
    let y = |v: f64| top + plot_h - (v / scale_max).clamp(0.0, 1.0) * plot_h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" \
         font-family=\"system-ui,sans-serif\" font-size=\"11\">\
         <text x=\"{left}\" y=\"18\" font-size=\"13\" font-weight=\"600\">{}</text>",
        esc(title)
    );
    // Axis and grid.
    let mut tick = 0.0;
    while tick <= scale_max + step * 1e-6 {
        let yy = y(tick);
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - right,
            left - 6.0,
            yy + 4.0,
            fmt_num(tick)
        );
        tick += step;
    }
    let _ = write!(
        svg,
        "<text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        top + plot_h / 2.0,
        esc(unit)
    );
    let n = groups.len().max(1) as f64;
    let group_w = plot_w / n;
    let bar_w = (group_w * 0.8 / metrics.len().max(1) as f64).min(48.0);
    for (gi, (label, _)) in groups.iter().enumerate() {
        let gx = left + group_w * gi as f64;
        let start = gx + (group_w - bar_w * metrics.len() as f64) / 2.0;
        for (mi, v) in values[gi].iter().enumerate() {
            let Some((v, range)) = v else { continue };
            let x = start + bar_w * mi as f64;
            let color = COLORS[mi % COLORS.len()];
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\">\
                 <title>{}: {} = {}</title></rect>",
                y(*v),
                bar_w - 2.0,
                (top + plot_h - y(*v)).max(0.0),
                esc(label),
                esc(&metrics[mi]),
                fmt_metric(&metrics[mi], *v)
            );
            if let Some((lo, hi)) = range {
                let cx = x + (bar_w - 2.0) / 2.0;
                let _ = write!(
                    svg,
                    "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>",
                    y(*lo),
                    y(*hi)
                );
            }
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">{}</text>",
                x + (bar_w - 2.0) / 2.0,
                y(*v) - 3.0,
                fmt_metric(&metrics[mi], *v)
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            gx + group_w / 2.0,
            top + plot_h + 16.0,
            esc(label)
        );
    }
    // Legend.
    let mut lx = left;
    for (mi, m) in metrics.iter().enumerate() {
        let _ = write!(
            svg,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            h - 22.0,
            COLORS[mi % COLORS.len()],
            lx + 14.0,
            h - 13.0,
            esc(m)
        );
        lx += 24.0 + 6.5 * m.len() as f64;
    }
    svg.push_str("</svg>");
    svg
}

/// An axis top and a tick step: 1, 2 or 5 × 10^k, about five ticks.
fn nice_axis(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.2);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

/// The HTML report: per figure its description, plots, table and targets; the metric
/// definitions; the machine and the command.
pub fn html(report: &BenchReport, figures: &[Figure]) -> String {
    let mut body = String::new();
    let m = &report.meta;
    let _ = write!(
        body,
        "<h1>voq bench</h1><p class=meta><code>{}</code> — {} UTC, {} cores ({}), load {} → {}, {}{:.0} s. \
         Loopback: in-process server, netem UDP proxy, client; every figure is measured, \
         nothing is simulated except the network.</p>",
        esc(&m.command),
        esc(&m.date),
        m.cores,
        esc(&m.cpu),
        esc(&m.load_start),
        esc(&m.load_end),
        if m.quick {
            "--quick (fewer repeats, shorter audio), "
        } else {
            ""
        },
        m.duration_s
    );
    for f in &report.figures {
        let rows = rows(f, &report.scenarios);
        if rows.is_empty() {
            continue;
        }
        let _ = write!(
            body,
            "<section><h2>{}</h2><p>{}</p>",
            esc(&f.title),
            esc(&f.description)
        );
        if let Some(fig) = figures.iter().find(|x| x.id == f.id) {
            for p in &fig.plots {
                body.push_str("<div class=plot>");
                body.push_str(&bar_chart(&p.title, &p.unit, &p.metrics, &rows));
                body.push_str("</div>");
            }
        }
        let _ = write!(body, "<table><tr><th></th>");
        for c in &f.columns {
            let _ = write!(body, "<th title=\"{}\">{}</th>", metric_value(c), esc(c));
        }
        body.push_str("<th>runs</th><th>network</th><th>scenarios</th></tr>");
        for (label, ss) in &rows {
            let _ = write!(body, "<tr><td>{}</td>", esc(label));
            for c in &f.columns {
                let _ = write!(body, "<td class=num>{}</td>", esc(&row_cell(ss, c)));
            }
            let _ = write!(
                body,
                "<td>{}</td><td>{}</td><td>{}</td></tr>",
                ss.iter()
                    .map(|s| s.repeats.to_string())
                    .collect::<Vec<_>>()
                    .join("+"),
                esc(&ss
                    .first()
                    .map_or(String::new(), |s| s.network.description.clone())),
                esc(&ss
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
            );
        }
        body.push_str("</table><ul class=targets>");
        for s in report.scenarios.iter().filter(|s| s.figure == f.id) {
            for t in &s.targets {
                let _ = write!(
                    body,
                    "<li class=\"{}\">{}</li>",
                    if t.met { "met" } else { "missed" },
                    esc(&target_line(s, t))
                );
            }
            for e in &s.errors {
                let _ = write!(
                    body,
                    "<li class=missed>ERROR {}: {}</li>",
                    esc(&s.name),
                    esc(e)
                );
            }
        }
        body.push_str("</ul></section>");
    }
    body.push_str(
        "<section><h2>Reading the numbers</h2><p>Cells are the p50 over the runs, with the \
         smallest and largest run in brackets; bars are the same p50, whiskers the range. \
         <code>prompt_delivered_fraction</code> and <code>reference_delivered_fraction</code> \
         are ratios of sums over all runs; <code>prompt_bit_exact</code> is the fraction of runs \
         whose echo equalled the prompt sample for sample. The JSON (<code>--json</code>) has \
         every run.</p></section>",
    );
    format!(
        "<!doctype html><meta charset=utf-8><title>voq bench</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px}}\
         td.num{{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}}\
         li.met{{color:#070}}li.missed{{color:#b00;font-weight:600}}.meta{{color:#555}}\
         .plot{{margin:1em 0}}</style>{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [10.0, 20.0, 30.0, 40.0];
        assert_eq!(percentile(&v, 0.0), 10.0);
        assert_eq!(percentile(&v, 0.5), 25.0);
        assert_eq!(percentile(&v, 1.0), 40.0);
        assert!((percentile(&v, 0.99) - 39.7).abs() < 1e-9);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
