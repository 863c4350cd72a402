//! The SK_REUSEPORT steering program's maps and policy values, shared by the program
//! (lb-ebpf, object `lb-reuseport`) and the daemon.
