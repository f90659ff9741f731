//! Remedy datastorage: stores audit events in PostgreSQL behind a small HTTP API.

pub mod config;
pub mod db;
pub mod http;
