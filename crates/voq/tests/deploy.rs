//! The deployment manifests hold voq configuration that Kubernetes schemas cannot see into: the
//! balancer's TOML inside the ConfigMap must be valid for `voq lb` (scripts/check-deploy checks
//! the Kubernetes side).
#![allow(clippy::unwrap_used)]

use std::path::Path;

/// The indented block under `lb.toml: |` of a ConfigMap.
fn embedded_lb_toml(manifest: &str) -> String {
    let mut lines = manifest
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("lb.toml: |"))
        .skip(1);
    let first = lines.next().unwrap();
    let indent = first.len() - first.trim_start().len();
    std::iter::once(first)
        .chain(
            lines.take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent),
        )
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_kubernetes_balancer_config_is_valid_voq_lb_toml() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/k8s/voq-lb/balancer.yaml");
    let toml_text = embedded_lb_toml(&std::fs::read_to_string(path).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lb.toml");
    std::fs::write(&file, &toml_text).unwrap();
    let config = voq_lb::LbConfig::from_file(&file).unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
    assert_eq!(config.backends.len(), 3);
    assert!(
        config
            .backends
            .iter()
            .all(|b| b.server_id().is_ok() && !b.is_literal())
    );
    assert_eq!(
        (config.server_id_len, config.nonce_len),
        (Some(2), Some(8)),
        "matches the servers' --lb-nonce-len 8 and 4-hex-digit ids"
    );
}
