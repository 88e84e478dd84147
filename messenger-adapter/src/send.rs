//! Outgoing: the Send API request bodies ([`payload`]) and the Graph API client with
//! retries ([`graph`]),
//! paced per Page ([`pace`]).

pub mod graph;
pub mod pace;
pub mod payload;
