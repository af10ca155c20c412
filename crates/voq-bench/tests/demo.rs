//! `voq demo` on the bench engine: two of its scenarios (a prompt echoed; a call through
//! `voq lb` whose client changes address mid-turn) run end to end, and the report holds each
//! call's audio and waveforms. The full demo is `voq demo` (scripts/demo).
#![allow(clippy::unwrap_used)]

use voq_bench::demo::{DemoArgs, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_scenarios_pass_and_the_report_shows_their_audio() {
    let out = tempfile::tempdir().unwrap();
    let args = DemoArgs {
        out: out.path().to_path_buf(),
        json: false,
        scenarios: vec!["demo-echo".into(), "demo-migration".into()],
    };
    run(args).await.unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    let rows = summary.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["passed"], true, "{row}");
        let files: Vec<&str> = row["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f[1].as_str().unwrap())
            .collect();
        for suffix in [
            "prompt.wav",
            "held.wav",
            "received.wav",
            "played.wav",
            "prompt.svg",
            "reply.svg",
        ] {
            let file = files.iter().find(|f| f.ends_with(suffix));
            let file = file.unwrap_or_else(|| panic!("no {suffix} in {files:?}"));
            assert!(out.path().join(file).is_file(), "{file} was not written");
        }
    }
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.contains("network change mid-call") && html.contains(".svg"));
}

#[test]
fn an_unknown_scenario_name_is_refused_with_the_names_file() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(run(DemoArgs {
            out: std::env::temp_dir().join("voq-demo-unknown"),
            json: false,
            scenarios: vec!["no-such".into()],
        }))
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("bench/demo/demo.toml"),
        "{err:#}"
    );
}
