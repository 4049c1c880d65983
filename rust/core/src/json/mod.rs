//! Reading what agents send: JSON text read strictly (one reading, or refused), folding
//! its spellings, finding an object's members, call arguments as values or as text, and text
//! made inert for people.

pub mod arg_json;
pub mod args;
pub mod fields;
pub mod fold;
pub mod inert;
pub mod strict;
