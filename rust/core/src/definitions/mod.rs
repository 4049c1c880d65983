//! Tool definitions as servers list them: their digests and hints, the tool objects a
//! list answer holds, and the definitions each server last listed.

pub mod definition;
pub mod listed;
pub mod sightings;
