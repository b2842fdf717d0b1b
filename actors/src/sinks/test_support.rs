//! Helpers of the connector tests: in-test destinations on loopback, sample batches.

use vedette_config::Format;

use super::delivery::Outgoing;

/// Serves `app` on a loopback port; returns `http://ADDR`.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("test server") });
    format!("http://{addr}")
}

/// `n` sample alerts (rule `r<i>`, alert id `i + 1`, spool sequence `i + 1`) encoded in `format`.
pub fn batch(format: Format, n: usize) -> Vec<Outgoing> {
    (0..n)
        .map(|i| {
            let mut alert = vedette_pipelines::formats::sample_alert();
            alert.rule_id = format!("r{i}");
            alert.alert_id = uuid::Uuid::from_u128(i as u128 + 1);
            let body = vedette_pipelines::formats::encode(format, &alert);
            Outgoing { seq: i as u64 + 1, alert, body }
        })
        .collect()
}
