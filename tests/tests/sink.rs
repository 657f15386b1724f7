//! The MongoDB writer against the real server: replays are idempotent, order
//! within a batch holds, refused documents are reported, not retried.

use mongodb::bson::{Document, doc};
use sluice::config::Config;
use sluice::sink::{Op, Sink, SinkError, WriteOp};
use sluice_tests::TestEnv;

async fn sink(env: &TestEnv) -> (Sink, Config) {
    let config = env.config(&[], "").unwrap();
    (Sink::connect(&config.mongo).await.unwrap(), config)
}

fn insert(doc: Document) -> WriteOp {
    WriteOp::new(Op::Insert, &doc)
}

#[tokio::test]
async fn a_replayed_insert_batch_is_counted_as_present_not_stored_twice() {
    let env = TestEnv::new("sink-replay");
    let (sink, _) = sink(&env).await;
    let batch: Vec<WriteOp> = (0..10).map(|i| insert(doc! { "_id": format!("t:0:{i}:0"), "num": i })).collect();
    let first = sink.write(&batch[..6]).await.unwrap();
    assert_eq!((first.inserted, first.duplicates), (6, 0));
    // The whole batch again, as after a crash before the commit: 6 are there, 4 are new.
    let again = sink.write(&batch).await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (4, 6));
    assert_eq!(env.documents().await.unwrap().len(), 10);
}

#[tokio::test]
async fn upsert_then_delete_of_one_id_keeps_order() {
    let env = TestEnv::new("sink-order");
    let (sink, _) = sink(&env).await;
    let ops = vec![
        WriteOp::new(Op::Upsert, &doc! { "_id": "k", "v": 1 }),
        WriteOp::new(Op::Upsert, &doc! { "_id": "k", "v": 2 }),
        WriteOp::new(Op::Delete, &doc! { "_id": "k" }),
        WriteOp::new(Op::Upsert, &doc! { "_id": "j", "v": 3 }),
        insert(doc! { "_id": "i", "v": 4 }),
    ];
    let r = sink.write(&ops).await.unwrap();
    assert_eq!((r.upserted, r.deleted, r.inserted), (3, 1, 1));
    let mut docs = env.documents().await.unwrap();
    docs.sort_by_key(|d| d.get_str("_id").unwrap().to_owned());
    assert_eq!(docs, vec![doc! { "_id": "i", "v": 4 }, doc! { "_id": "j", "v": 3 }]);
    // Replaying the same ops gives the same end state.
    sink.write(&ops).await.unwrap();
    assert_eq!(env.documents().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_refused_document_is_reported_and_the_rest_written() {
    let env = TestEnv::new("sink-reject");
    let (sink, _) = sink(&env).await;
    let ops = vec![insert(doc! { "_id": "a", "n": 1 }), WriteOp::new(Op::Upsert, &doc! { "n": 2 }), insert(doc! { "_id": "b", "n": 3 })];
    match sink.write(&ops).await {
        Err(SinkError::Rejected { rejections: r, report }) => {
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].index, 1);
            assert!(r[0].message.contains("_id"), "{:?}", r[0]);
            assert_eq!(report.inserted, 2, "what was written is counted: {report:?}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(env.documents().await.unwrap().len(), 2);
}

#[tokio::test]
async fn progress_only_moves_forward() {
    let env = TestEnv::new("progress");
    let (sink, config) = sink(&env).await;
    let p = sink.progress(&format!("{}-offsets", env.collection), &config.kafka.group_id);
    p.save("t", 0, 100, None).await.unwrap();
    p.save("t", 0, 50, None).await.unwrap(); // a late writer cannot move it back
    p.save("t", 1, 7, None).await.unwrap();
    let got = p.load(&[("t".into(), 0), ("t".into(), 1), ("t".into(), 2)]).await.unwrap();
    assert_eq!(got.get(&("t".to_string(), 0)), Some(&100));
    assert_eq!(got.get(&("t".to_string(), 1)), Some(&7));
    assert_eq!(got.get(&("t".to_string(), 2)), None);
    assert_eq!(p.forget_group().await.unwrap(), 2);
}
