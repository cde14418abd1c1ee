//! A record document from the network or a damaged file: loading and projecting it never
//! panics, whatever the bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sellsync_model::{AssumeLive, Catalog, Policy, ProjectCtx, RecordDoc};

fuzz_target!(|data: &[u8]| {
    let device = "fuzz".parse().expect("a valid device id");
    if let Ok(doc) = RecordDoc::load(data, &device) {
        let catalog = Catalog::example();
        let policy = Policy::default();
        let ctx = ProjectCtx { catalog: &catalog, policy: &policy, directory: &AssumeLive };
        let projection = doc.project(&ctx);
        let _ = doc.push_view(&projection);
    }
});
