//! Record documents, field policies and the conflict projection.
//!
//! Pure: nothing here reads the clock, the OS random generator, the disk or the network.
//! Callers pass time and identifiers in.

mod ids;

pub use ids::{BadId, DeviceId, RecordId, UserId};
