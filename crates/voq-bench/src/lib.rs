//! voq measurement: an impaired UDP path ([`proxy`]), the end-to-end demo ([`demo`]).

pub mod demo;
pub mod proxy;
