//! The database, the source of truth for block and allow lists and the
//! record of what was done: the store (sqlx, SQLite or MySQL/MariaDB, with
//! embedded migrations), row validation, the reconciler that turns rows into
//! kernel entries, the buffer that keeps events through an outage, and the
//! outbox that keeps an operator's changes through one.
//!
//! May import `kernel` (the reconciler writes maps) and the crate root;
//! never `detect` or `cli`.

pub mod buffer;
pub mod feeds;
pub mod outbox;
pub mod retention;
pub mod rows;
pub mod schema;
pub mod store;
pub mod sync;

pub use buffer::EventBuffer;
pub use store::{Store, StoreError};
