//! voq measurement: an impaired UDP path ([`proxy`]), the benchmark engine behind `voq bench`
//! ([`bench`]), and the end-to-end demo ([`demo`]), which runs its scenarios on that engine and
//! draws their waveforms ([`waveform`]).

pub mod bench;
pub mod demo;
pub mod fleet_cmd;
pub mod load;
pub mod proxy;
pub mod waveform;
