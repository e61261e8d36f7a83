//! Everything that talks to bpf(2): loading and attaching the program, the
//! pins under bpffs, typed access to the maps, batch reads, the sample ring
//! and the kernel's clock.
//!
//! May import only the crate root (`error`, `parse`, `guard`, the objects
//! and names in `lib.rs`) and `sip-xdp-common`: nothing here knows about
//! detectors, SQL or the command line. What it
//! reads it hands out as plain data (`Totals`, `Replies`, raw samples).

pub mod ban_index;
pub mod batch;
pub mod capacities;
pub mod clock;
pub mod features;
pub mod handles;
pub mod hot;
pub mod lists;
pub mod loader;
pub mod one_controller;
pub mod pins;
pub mod ring;
pub mod rules;
pub mod upgrade;

pub use handles::{Maps, Replies, Totals};
pub use hot::Sampler;
pub use lists::KernelLists;
pub use pins::Pins;
