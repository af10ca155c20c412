//! voq measurement: an impaired UDP path ([`proxy`]), the end-to-end demo ([`demo`]), and the
//! benchmark runner behind `voq bench` ([`bench`]).

pub mod bench;
pub mod demo;
pub mod proxy;
