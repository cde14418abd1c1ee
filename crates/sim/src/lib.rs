//! A local Zendesk Sell v2 simulator.
