//! From the rows to the kernel, in one room: `plan` compares what the rows
//! ask for with what the kernel holds, `apply` writes the difference and
//! reports it. The path reads store → rows → plan → apply → kernel lists.
//!
//! May import `db` (row types), `kernel` (through `KernelLists`), the
//! guard and the crate root; never `detect`, `feed`, `cli` or `controller`.

pub mod apply;
pub mod plan;

pub use apply::{Applier, Clocks, Rows, Synced};
pub use plan::{AllowLists, Cover, Current, Desired, Plan, Planner, Skip, Want};
