//! Outgoing: the Send API request bodies ([`payload`]) and the Graph API client with
//! retries ([`graph`]), paced per Page ([`pace`]), sending the calls that are ready
//! together as batch requests ([`batch`]).

pub mod batch;
pub mod graph;
pub mod pace;
pub mod payload;
