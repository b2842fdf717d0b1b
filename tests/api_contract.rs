//! The served OpenAPI document against the real API: schemathesis (installed by
//! `.ci/test-tools` into `~/.cache/vedette-venv`; `VEDETTE_SCHEMATHESIS` points at another
//! `st`) generates requests for every operation with an admin token and checks that nothing
//! answers 5xx and every response matches the document's schema and content type.
//!
//! Left out of the generated runs: the document itself, the live streams of alerts and of a
//! sensor's events (they never end; they have their own tests) and
//! token revocation (schemathesis feeds the ids it lists back into `DELETE /tokens/{id}` and
//! revokes its own token — correct behaviour, tested in `api_access`). One worker: with two,
//! schemathesis on Python 3.11 now and then fails inside itself ("AST constructor recursion
//! depth mismatch"), which is not an API failure.

use std::process::Command;
use std::time::Duration;

use vedette_tests::{RawClient, TestEngine, eventually, ndjson_frame, shadow_cat};

fn schemathesis() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("VEDETTE_SCHEMATHESIS") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let st = std::path::PathBuf::from(home).join(".cache/vedette-venv/bin/st");
    assert!(
        st.exists(),
        "schemathesis is not installed at {}: run `.ci/test-tools` (the README's test command does), \
         or set VEDETTE_SCHEMATHESIS to an `st` binary",
        st.display()
    );
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_response_outside_the_document() {
    let st = schemathesis();
    let t = TestEngine::start_with(|c| {
        c.api.rate_limit_per_sec = 1_000_000;
        c.api.rate_limit_burst = 1_000_000;
    })
    .await;
    // Some history, so alert routes answer with real alerts.
    let c = RawClient::connect(&t.sensor("s1", "acme"), 0).await.unwrap();
    let mut s = c.data_stream().await;
    s.write_all(&ndjson_frame(1, "process_events", &(0..5).map(shadow_cat).collect::<Vec<_>>())).await.unwrap();
    assert!(eventually(Duration::from_secs(10), || t.engine.history().size().0 == 5).await);

    let url = format!("http://{}/api/v1/openapi.json", t.engine.api_addr);
    let token = t.admin_token();
    // schemathesis keeps a cache in its working directory: not in the repository.
    let scratch = tempfile::tempdir().unwrap();
    let cwd = scratch.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .current_dir(cwd)
            .args(["run", &url, "-H", &format!("Authorization: Bearer {token}")])
            .args(["--checks", "not_a_server_error,response_schema_conformance,content_type_conformance"])
            .args(["--exclude-path", "/api/v1/alerts/stream", "--exclude-operation-id", "revoke_token"])
            .args(["--exclude-path", "/api/v1/openapi.json", "--exclude-path", "/api/v1/events/stream"])
            .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "40", "--workers", "1"])
            .env("NO_COLOR", "1")
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    let tested: usize = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `Tested:` line in schemathesis' summary:\n{text}"));
    // Every documented operation but the three left out above and the document itself.
    let documented = vedette_engine::api::ROUTES.len();
    assert_eq!(tested, documented - 4, "{text}");
}
