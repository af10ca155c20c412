//! `voq demo`: the main job, end to end on loopback, as scenarios of the `voq bench` engine
//! (`bench/demo/demo.toml`, built in): a prompt echoed bit-exact, the same through loss, a reply
//! sent ahead and played through a blackout, a barge-in, the browser carriers, real synthesized
//! speech over Opus, and calls through `voq lb`. Each scenario's targets are its checks. The
//! report shows every call's audio beside its waveforms: the prompt sent over what the server
//! holds, and the reply received over what was played, stalls shaded and the barge-in marked.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::bench::report::ScenarioResult;
use crate::bench::run::RunAudio;
use crate::bench::scenario::{self, Figure};
use crate::waveform::{self, Marks, Track};

/// The shared test audio, built in so the demo runs from anywhere.
pub const PROMPT_CARWASH: &[u8] = include_bytes!("../../../testdata/audio/prompt-carwash-24k.wav");
pub const PROMPT_LISBON: &[u8] = include_bytes!("../../../testdata/audio/prompt-lisbon-24k.wav");
pub const REPLY_CARWASH: &[u8] = include_bytes!("../../../testdata/audio/reply-carwash-24k.wav");

/// The demo's scenarios.
pub const SCENARIOS: &str = include_str!("../../../bench/demo/demo.toml");

/// Options of `voq demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the report and the audio go.
    #[arg(long, default_value = "out/demo", value_name = "DIR")]
    pub out: PathBuf,
    /// Print the summary as JSON too.
    #[arg(long)]
    pub json: bool,
    /// Run only these scenarios (by name, e.g. `demo-echo`; repeatable).
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
}

/// One row of the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoRow {
    pub scenario: String,
    pub label: String,
    pub description: String,
    pub carrier: String,
    pub network: String,
    /// Connection setup as the client measured it, ms (on loopback: processing, not RTTs).
    pub setup_ms: Option<f64>,
    /// Each check (a target of the scenario) as "claim: value op threshold".
    pub checks: Vec<String>,
    pub passed: bool,
    pub error: Option<String>,
    /// Audio and pictures written next to the report (file names).
    pub files: Vec<(String, String)>,
}

/// The demo's figure, minus what cannot run on this machine (said on stderr).
fn scenarios_here(chosen: &[String]) -> anyhow::Result<Figure> {
    let mut figure = scenario::parse_figure("demo", SCENARIOS, false)?;
    if !chosen.is_empty() {
        for c in chosen {
            anyhow::ensure!(
                figure.scenarios.iter().any(|s| s.name == *c),
                "no demo scenario named \"{c}\" (the names are in bench/demo/demo.toml)"
            );
        }
        figure.scenarios.retain(|s| chosen.contains(&s.name));
    }
    if voq_server::agent::Speak::new().is_err() {
        figure.scenarios.retain(|s| {
            let keep = s.agent.spec != "speak";
            if !keep {
                eprintln!(
                    "voq demo: skipping \"{}\": espeak-ng is not installed (scripts/setup installs it)",
                    s.label
                );
            }
            keep
        });
    }
    if let Err(why) = voq_netns::fleet::Fleet::available() {
        anyhow::ensure!(
            std::env::var_os("VOQ_NETNS_REQUIRED").is_none(),
            "the demo's anycast fleet needs network namespaces and BIRD, unavailable here: {why}"
        );
        figure.scenarios.retain(|s| {
            if s.fleet.is_some() {
                eprintln!(
                    "voq demo: skipping \"{}\": it builds an anycast fleet in network namespaces \
                     with BIRD, unavailable here ({why}); run as root after scripts/setup",
                    s.label
                );
            }
            s.fleet.is_none()
        });
    }
    if let Err(why) = voq_netns::NetnsLink::available() {
        anyhow::ensure!(
            std::env::var_os("VOQ_NETNS_REQUIRED").is_none(),
            "the demo's browser-carrier scenarios need network namespaces, unavailable here: {why}"
        );
        figure.scenarios.retain(|s| {
            if s.network.netns {
                eprintln!(
                    "voq demo: skipping \"{}\": it runs through network namespaces, unavailable \
                     here ({why}); run as root to include it",
                    s.label
                );
            }
            !s.network.netns
        });
    }
    Ok(figure)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let figure = scenarios_here(&args.scenarios)?;
    eprintln!(
        "voq demo: {} scenarios on loopback; audio and report in {}",
        figure.scenarios.len(),
        args.out.display()
    );
    let results = crate::bench::execute(std::slice::from_ref(&figure), None, true).await?;
    let mut rows = Vec::new();
    for (i, r) in results.iter().enumerate() {
        rows.push(row(i, r, &args.out)?);
    }
    let table = summary_table(&rows);
    #[allow(clippy::print_stdout)] // the summary is this command's output
    {
        println!("\n{table}");
        if args.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
    }
    let html = args.out.join("report.html");
    std::fs::write(&html, html_report(&figure, &rows))?;
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_vec_pretty(&rows)?,
    )?;
    eprintln!("report: {}", html.display());
    let failed = rows.iter().filter(|r| !r.passed).count();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} scenarios failed their check",
        rows.len()
    );
    Ok(())
}

/// The summary row of one scenario, with its audio and pictures written to `out`.
fn row(index: usize, r: &ScenarioResult, out: &Path) -> anyhow::Result<DemoRow> {
    let checks: Vec<String> = r
        .targets
        .iter()
        .map(|t| {
            format!(
                "{} ({} = {} {} {}) {}",
                t.claim,
                t.metric,
                t.value.map_or("-".into(), |v| format!("{v:.0}")),
                t.op,
                t.threshold,
                if t.met { "ok" } else { "MISSED" }
            )
        })
        .collect();
    let error = r.errors.first().cloned();
    let passed = error.is_none() && !r.targets.is_empty() && r.targets.iter().all(|t| t.met);
    let mut files = Vec::new();
    if let Some(audio) = r.runs.first().and_then(|run| run.audio.as_ref()) {
        files = write_audio(index, &r.name, audio, out)?;
    }
    Ok(DemoRow {
        scenario: r.name.clone(),
        label: r.label.clone(),
        description: r.description.clone(),
        carrier: r.carrier.clone(),
        network: r.network.description.clone(),
        setup_ms: r.metrics.get("setup_ms").copied(),
        checks,
        passed,
        error,
        files,
    })
}

/// The call's WAVs and two waveform pictures; returns (what, file name) pairs.
fn write_audio(
    index: usize,
    name: &str,
    audio: &RunAudio,
    out: &Path,
) -> anyhow::Result<Vec<(String, String)>> {
    let base = format!("{:02}-{name}", index + 1);
    let mut files = Vec::new();
    let mut wav = |what: &str, suffix: &str, samples: &[i16]| -> anyhow::Result<()> {
        let file = format!("{base}-{suffix}.wav");
        voq_audio::write_wav_file(out.join(&file), samples, voq_audio::SAMPLE_RATE)?;
        files.push((what.to_string(), file));
        Ok(())
    };
    wav("prompt sent", "prompt", &audio.prompt)?;
    if let Some(held) = &audio.held {
        wav("prompt the server holds", "held", held)?;
    }
    wav("reply received", "received", &audio.received)?;
    wav("reply played", "played", &audio.played)?;
    let mut prompt_tracks = vec![Track {
        samples: &audio.prompt,
        color: (40, 80, 200),
    }];
    if let Some(held) = &audio.held {
        prompt_tracks.push(Track {
            samples: held,
            color: (20, 140, 60),
        });
    }
    let prompt_svg = format!("{base}-prompt.svg");
    std::fs::write(
        out.join(&prompt_svg),
        waveform::svg(&prompt_tracks, &Marks::default()),
    )?;
    files.push(("prompt: sent / held".into(), prompt_svg));
    // Stalls: runs of digital silence the device rendered while it waited (10 ms or more).
    let marks = Marks {
        stalls: waveform::silent_runs(&audio.played, 240),
        barge_in: audio
            .barge_in_ms
            .map(|ms| (ms * u64::from(voq_audio::SAMPLE_RATE) / 1000) as usize),
    };
    let reply_svg = format!("{base}-reply.svg");
    std::fs::write(
        out.join(&reply_svg),
        waveform::svg(
            &[
                Track {
                    samples: &audio.received,
                    color: (120, 60, 160),
                },
                Track {
                    samples: &audio.played,
                    color: (200, 100, 20),
                },
            ],
            &marks,
        ),
    )?;
    files.push(("reply: received / played".into(), reply_svg));
    Ok(files)
}

/// The summary as a fixed-width table.
pub fn summary_table(rows: &[DemoRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:<13} {:<40} {:>8}  result",
        "scenario", "carrier", "network", "setup ms"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<26} {:<13} {:<40} {:>8}  {}",
            r.label,
            r.carrier,
            truncate(&r.network, 40),
            r.setup_ms.map_or("-".into(), |v| format!("{v:.1}")),
            if r.passed { "ok" } else { "FAIL" }
        );
        for c in &r.checks {
            let _ = writeln!(out, "{:<26} - {c}", "");
        }
        if let Some(e) = &r.error {
            let _ = writeln!(out, "{:<26} ! {e}", "");
        }
    }
    let passed = rows.iter().filter(|r| r.passed).count();
    let _ = writeln!(
        out,
        "{passed}/{} scenarios passed. Setup is shown in ms: on loopback it measures processing, \
         not round trips.",
        rows.len()
    );
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html_report(figure: &Figure, rows: &[DemoRow]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><meta charset=utf-8><title>voq demo</title>\
         <style>body{{font:14px system-ui;margin:2em;max-width:960px}}\
         section{{border-top:1px solid #ccc;padding:1em 0}}.ok{{color:#070}}.fail{{color:#b00}}\
         figure{{margin:.5em 0}}figcaption{{color:#555}}audio{{height:2em;vertical-align:middle}}\
         </style><h1>voq demo</h1><p>{}</p><p>Each picture stacks two waveforms on one time \
         axis. Prompt: what the client sent (blue) over what the server holds (green). Reply: \
         what the agent said, placed by timestamp (purple), over what the device played \
         (orange); shaded red where playback stalled, a red line where the user barged in.</p>",
        html_escape(&figure.description)
    );
    for r in rows {
        let _ = write!(
            h,
            "<section><h2>{} <span class={}>{}</span></h2><p>{}</p><p>carrier {}, network {}, \
             setup {}</p><ul>",
            html_escape(&r.label),
            if r.passed { "ok" } else { "fail" },
            if r.passed { "ok" } else { "FAIL" },
            html_escape(&r.description),
            html_escape(&r.carrier),
            html_escape(&r.network),
            r.setup_ms.map_or("-".into(), |v| format!("{v:.1} ms")),
        );
        for c in &r.checks {
            let _ = write!(h, "<li>{}</li>", html_escape(c));
        }
        if let Some(e) = &r.error {
            let _ = write!(h, "<li class=fail>{}</li>", html_escape(e));
        }
        h.push_str("</ul>");
        for (what, file) in &r.files {
            let file = html_escape(file);
            if file.ends_with(".svg") {
                let _ = write!(
                    h,
                    "<figure><img src=\"{file}\" alt=\"{0}\" width=900><figcaption>{0}</figcaption></figure>",
                    html_escape(what)
                );
            } else {
                let _ = write!(
                    h,
                    "<div>{}: <audio controls preload=none src=\"{file}\"></audio></div>",
                    html_escape(what)
                );
            }
        }
        h.push_str("</section>");
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_scenarios_parse_and_every_one_has_a_check() {
        let figure =
            scenario::parse_figure("demo", SCENARIOS, false).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(figure.scenarios.len() >= 9);
        for s in &figure.scenarios {
            assert!(!s.targets.is_empty(), "{} has no check", s.name);
        }
    }
}
