//! ucoder-operators: the engine-independent heart of the IPC dataflow.
//!
//! It owns the record types that flow between stages, the generic asynchronous operator that hands
//! work to a backend pool without blocking a timely worker, the differential-dataflow signature
//! grouper, the consensus selector and the adaptive-sampling controller, and the traits the engine
//! implements (`Generate`, `Execute`). It knows nothing of candle or Parquet.
