//! What reading a map costs in automerge 0.12: `get`/`get_all` per key against one `map_range`
//! over the whole map, on a 30-key map with 200 writes. The numbers explain why the projection
//! reads each map once (`crates/model/src/snapshot.rs`).
//!
//! `cargo run --release -p sellsync-model --example read_costs`

use automerge::{Automerge, ObjType, ROOT, ReadDoc, transaction::Transactable};
use std::time::Instant;
fn main() {
    let mut doc = Automerge::new();
    let mut fields = None;
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        fields = Some(tx.put_object(ROOT, "fields", ObjType::Map)?);
        Ok(())
    })
    .unwrap();
    let fields = fields.unwrap();
    for i in 0..200 {
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(
                &fields,
                format!("f{}", i % 30),
                format!("[\"v{i}\",1,2,\"d\"]"),
            )?;
            Ok(())
        })
        .unwrap();
    }
    let t = Instant::now();
    for _ in 0..1000 {
        for i in 0..30 {
            let _ = doc.get_all(&fields, format!("f{i}")).unwrap();
        }
    }
    println!("get_all x30: {:?}", t.elapsed() / 1000);
    let t = Instant::now();
    for _ in 0..1000 {
        let _: Vec<String> = doc.keys(&fields).collect();
    }
    println!("keys: {:?}", t.elapsed() / 1000);
    let t = Instant::now();
    for _ in 0..1000 {
        for i in 0..30 {
            let _ = doc.get(&fields, format!("f{i}")).unwrap();
        }
    }
    println!("get x30: {:?}", t.elapsed() / 1000);
    let t = Instant::now();
    for _ in 0..1000 {
        let _ = doc.get(ROOT, "fields").unwrap();
    }
    println!("get root: {:?}", t.elapsed() / 1000);
    let t = Instant::now();
    for _ in 0..100 {
        let _ = doc.get_heads();
    }
    println!("heads: {:?}", t.elapsed() / 100);
    more(&doc, &fields);
}
#[allow(dead_code)]
fn more(doc: &Automerge, fields: &automerge::ObjId) {
    let t = Instant::now();
    for _ in 0..1000 {
        let n = doc.map_range(fields, ..).count();
        assert!(n > 0);
    }
    println!("map_range: {:?}", t.elapsed() / 1000);
    let t = Instant::now();
    for _ in 0..1000 {
        let _ = doc.hydrate(None);
    }
    println!("hydrate: {:?}", t.elapsed() / 1000);
    let t = Instant::now();
    for _ in 0..1000 {
        let n = doc.iter().count();
        assert!(n > 0);
    }
    println!("iter: {:?}", t.elapsed() / 1000);
    let loaded = Automerge::load(&doc.save()).unwrap();
    let t = Instant::now();
    for _ in 0..1000 {
        for i in 0..30 {
            let _ = loaded.get_all(fields, format!("f{i}")).unwrap();
        }
    }
    println!("get_all x30 after load: {:?}", t.elapsed() / 1000);
}
