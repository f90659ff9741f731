//! Holds only `tests/smoke.rs`, which drives `test/local-cluster/cluster.sh`.
