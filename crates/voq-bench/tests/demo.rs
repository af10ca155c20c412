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

/// The demo's anycast fleet (root and BIRD; CI runs it): calls move to unicast, full servers
/// shed, every echo exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_anycast_moves_calls_to_unicast_and_sheds_load() {
    if let Err(why) = voq_netns::fleet::Fleet::available() {
        assert!(
            std::env::var_os("VOQ_NETNS_REQUIRED").is_none(),
            "VOQ_NETNS_REQUIRED=1 but the fleet cannot be built: {why}"
        );
        eprintln!("SKIPPED: the anycast demo needs root, namespaces and BIRD: {why}");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    run(DemoArgs {
        out: out.path().to_path_buf(),
        json: false,
        scenarios: vec!["demo-anycast".into()],
    })
    .await
    .unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    let rows = summary.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["passed"], true, "{}", rows[0]);
    assert_eq!(rows[0]["checks"].as_array().unwrap().len(), 4);
}
