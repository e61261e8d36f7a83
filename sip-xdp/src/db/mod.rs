//! The database, the source of truth for block and allow lists and the
//! record of what was done: the store (sqlx, SQLite or MySQL/MariaDB; one
//! file per table under `store/`), how a database is brought to what this
//! build needs (`schema` adopts the operator's tables, `migrate` runs the
//! embedded migrations; `connect` does both), row validation, the journal
//! of writes waiting for the database (events, ban rows, feed rows), the
//! outbox that keeps an operator's changes through an outage, feed rows,
//! and retention.
//!
//! May import the crate root only; never `kernel` (the sync writes the
//! maps), `feed`, `detect`, `cli` or `controller`.

pub mod feeds;
pub mod journal;
pub mod migrate;
pub mod outbox;
pub mod retention;
pub mod rows;
pub mod schema;
pub mod store;

pub use journal::Journal;
pub use migrate::connect;
pub use store::{Store, StoreError};
