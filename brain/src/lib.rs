//! The MOS "cluster brain": a sans-IO core (no sockets, no clock, no threads).
//!
//! Time is passed in as `u64` milliseconds of the caller's own monotonic clock, randomness through
//! [`rng::Rng`]. [`node::Node::handle`] turns inputs (timer ticks, datagrams, local samples) into
//! outputs (datagrams to send, migrations, the next timer). [`sim::Sim`] runs many nodes in
//! virtual time through the real wire codec. See docs/GOSSIP.md.
#![forbid(unsafe_code)]

pub mod balance;
pub mod gossip;
pub mod load;
pub mod membership;
pub mod node;
pub mod rng;
pub mod sim;
pub mod theory;
pub mod wire;
