//! L3: state files, start waves, logs, restarts and teardown.
