//! Loads the SK_REUSEPORT steering object and keeps its worker socket array and policy maps
//! in step with the listeners' workers.
