//! L2: one container on Linux: namespaces, overlayfs root, cgroups and a small init.
