//! The store on SQLite, on the host: every check of `store/checks.rs`,
//! each on a fresh database file.

#[path = "store/checks.rs"]
mod checks;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Once,
};

/// A fresh database file, removed with the returned guard.
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn fresh() -> (sip_xdp::db::Store, Dir) {
    static ZONE: Once = Once::new();
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    // SQLite's local clock is the process's: five hours behind UTC, so a
    // check mixing up the two clocks fails.
    ZONE.call_once(|| std::env::set_var("TZ", "EST5"));
    let dir = std::env::temp_dir().join(format!(
        "sip-xdp-store-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/sip-xdp.db", dir.display());
    let store = sip_xdp::db::connect(&url).await.unwrap();
    assert_eq!(store.kind(), "sqlite");
    (store, Dir(dir))
}

store_tests!(fresh());
