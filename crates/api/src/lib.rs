//! Zendesk Sell v2 wire types: envelopes, errors and resource DTOs.
