//! Outgoing: the Send API request bodies ([`payload`]) and the Graph API client with
//! retries ([`graph`]).

pub mod graph;
pub mod payload;
